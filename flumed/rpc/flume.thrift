/*
 * Apache Flume's Thrift RPC interface (flume-ng-sdk/src/main/thrift/flume.thrift),
 * as spoken by ThriftSource, ThriftSink and ThriftRpcClient. flumed's thrift source
 * and sink implement it; flumed/rpc/thrift_protocol.py checks itself against this
 * file when it is imported.
 */

namespace java org.apache.flume.thrift

struct ThriftFlumeEvent {
  1: required map <string, string> headers,
  2: required binary body,
}

enum Status {
  OK,
  FAILED,
  ERROR,
  UNKNOWN
}

service ThriftSourceProtocol {
  Status append(1: ThriftFlumeEvent event),
  Status appendBatch(1: list<ThriftFlumeEvent> events),
}
