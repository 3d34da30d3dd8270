// The oracle: Go's own sumdb/tlog, sumdb/note and sumdb (Client), built by
// modgate-testkit's gooracle, which adds the replace of golang.org/x/mod by the copy vendored
// in Go's source tree.
module modgate.test/oracle

go 1.21

require golang.org/x/mod v0.0.0
