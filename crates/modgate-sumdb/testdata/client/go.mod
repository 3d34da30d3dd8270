// Go's own sumdb.Client and sumdb.Server, built by modgate-testkit's gooracle, which adds
// the replace of golang.org/x/mod by the copy vendored in Go's source tree.
module modgate.test/client

go 1.21

require golang.org/x/mod v0.0.0
