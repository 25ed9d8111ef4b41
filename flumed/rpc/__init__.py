"""Wire protocols between agents: Avro RPC (Flume's AvroSource/AvroSink) and Thrift RPC."""
