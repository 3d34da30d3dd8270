// The independent audit of modgate's checksum database (tests/checksum_log_audit.rs), with Go's
// own sumdb/tlog and sumdb/note. modgate-testkit's gooracle builds it offline, adding the
// replace of golang.org/x/mod by the copy vendored in Go's source tree.
module modgate.test/sumdb_audit

go 1.21

require golang.org/x/mod v0.0.0
