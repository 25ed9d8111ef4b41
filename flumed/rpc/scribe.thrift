/*
 * Scribe's logging interface, as Apache Flume's ScribeSource serves it
 * (flume-ng-sources/flume-scribe-source): framed transport, binary protocol. Scribe's
 * own IDL extends fb303.FacebookService; only Log is served. flumed's scribe source
 * implements it (flumed/rpc/scribe_protocol.py checks itself against this file), and
 * the tests generate their Scribe client from it with thriftpy2.
 */

namespace java org.apache.flume.source.scribe

enum ResultCode {
  OK,
  TRY_LATER
}

struct LogEntry {
  1: string category,
  2: string message
}

service Scribe {
  ResultCode Log(1: list<LogEntry> messages);
}
