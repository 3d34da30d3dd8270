// Command client is Go's own checksum-database code run against modgate-sumdb, offline, for
// tests/go_client.rs. It is built against the copy of golang.org/x/mod vendored in Go's source
// tree (the one the go command itself uses).
//
// Mode "client": a golang.org/x/mod/sumdb.Client whose ReadRemote asks the Rust test over
// stdout/stdin — it writes "GET <path>\n" and reads "<status> <length>\n<body>" — and whose
// config (the verifier key and the latest tree it has seen) and cache live in directories the
// test names, so the same client can come back later. It looks up each argument
// (path@version, version possibly ending in /go.mod) and writes one line
// "RESULT <json>" with the go.sum lines or the error of each, and any security errors.
//
//	client client -vkey KEY -config DIR -cache DIR path@version...
//
// Mode "server": reads one JSON request on stdin (the log's record texts, its signed head, the
// paths to ask) and writes, as JSON, what golang.org/x/mod/sumdb.Server answers to each path.
//
//	client server
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/tlog"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: client client|server ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "client":
		err = runClient(os.Args[2:])
	case "server":
		err = runServer()
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

// ops implements sumdb.ClientOps.
type ops struct {
	vkey   string
	config string
	cache  string

	mu  sync.Mutex // one exchange with the test at a time
	in  *bufio.Reader
	out *os.File

	secMu    sync.Mutex
	security []string
}

func (o *ops) ReadRemote(path string) ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, err := fmt.Fprintf(o.out, "GET %s\n", path); err != nil {
		return nil, err
	}
	header, err := o.in.ReadString('\n')
	if err != nil {
		return nil, err
	}
	var status, length int
	if _, err := fmt.Sscanf(header, "%d %d\n", &status, &length); err != nil {
		return nil, fmt.Errorf("bad answer header %q: %v", header, err)
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(o.in, body); err != nil {
		return nil, err
	}
	if status != 200 {
		return nil, fmt.Errorf("GET %s: %d %s", path, status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func (o *ops) ReadConfig(file string) ([]byte, error) {
	if file == "key" {
		return []byte(o.vkey), nil
	}
	data, err := os.ReadFile(filepath.Join(o.config, file))
	if errors.Is(err, fs.ErrNotExist) {
		// No tree seen yet: the empty timeline.
		return []byte{}, nil
	}
	return data, err
}

func (o *ops) WriteConfig(file string, old, new []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	name := filepath.Join(o.config, file)
	cur, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		cur, err = []byte{}, nil
	}
	if err != nil {
		return err
	}
	if string(cur) != string(old) {
		return sumdb.ErrWriteConflict
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o777); err != nil {
		return err
	}
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, new, 0o666); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

func (o *ops) ReadCache(file string) ([]byte, error) {
	return os.ReadFile(filepath.Join(o.cache, file))
}

func (o *ops) WriteCache(file string, data []byte) {
	name := filepath.Join(o.cache, file)
	if err := os.MkdirAll(filepath.Dir(name), 0o777); err == nil {
		os.WriteFile(name, data, 0o666)
	}
}

func (o *ops) Log(msg string) { fmt.Fprintln(os.Stderr, msg) }

func (o *ops) SecurityError(msg string) {
	o.secMu.Lock()
	defer o.secMu.Unlock()
	fmt.Fprintln(os.Stderr, msg)
	o.security = append(o.security, msg)
}

type lookupResult struct {
	Lines []string `json:"lines"`
	Err   string   `json:"err,omitempty"`
}

type clientResult struct {
	Lookups  []lookupResult `json:"lookups"`
	Security []string       `json:"security"`
}

func runClient(args []string) error {
	flags := flag.NewFlagSet("client", flag.ContinueOnError)
	vkey := flags.String("vkey", "", "verifier key")
	config := flags.String("config", "", "config directory")
	cache := flags.String("cache", "", "cache directory")
	if err := flags.Parse(args); err != nil {
		return err
	}
	o := &ops{
		vkey:   *vkey,
		config: *config,
		cache:  *cache,
		in:     bufio.NewReader(os.Stdin),
		out:    os.Stdout,
	}
	c := sumdb.NewClient(o)
	var res clientResult
	for _, arg := range flags.Args() {
		path, vers, ok := strings.Cut(arg, "@")
		if !ok {
			return fmt.Errorf("not path@version: %q", arg)
		}
		lines, err := c.Lookup(path, vers)
		r := lookupResult{Lines: lines}
		if err != nil {
			r.Err = err.Error()
		}
		res.Lookups = append(res.Lookups, r)
	}
	res.Security = o.security
	data, err := json.Marshal(res)
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_, err = fmt.Fprintf(os.Stdout, "RESULT %s\n", data)
	return err
}

// serverOps implements sumdb.ServerOps over a log given as its record texts and signed head.
type serverOps struct {
	records [][]byte
	hashes  []tlog.Hash
	signed  []byte
	ids     map[module.Version]int64
}

func (s *serverOps) Signed(ctx context.Context) ([]byte, error) { return s.signed, nil }

func (s *serverOps) ReadRecords(ctx context.Context, id, n int64) ([][]byte, error) {
	if id < 0 || n < 0 || id+n > int64(len(s.records)) {
		return nil, fmt.Errorf("missing records")
	}
	return s.records[id : id+n], nil
}

func (s *serverOps) Lookup(ctx context.Context, m module.Version) (int64, error) {
	id, ok := s.ids[m]
	if !ok {
		return 0, os.ErrNotExist
	}
	return id, nil
}

func (s *serverOps) ReadTileData(ctx context.Context, t tlog.Tile) ([]byte, error) {
	return tlog.ReadTileData(t, s)
}

func (s *serverOps) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(s.hashes)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = s.hashes[x]
	}
	return out, nil
}

type serverRequest struct {
	Records []string `json:"records"`
	Signed  string   `json:"signed"`
	Paths   []string `json:"paths"`
}

type serverAnswer struct {
	Status      int    `json:"status"`
	ContentType string `json:"content_type"`
	Body        []byte `json:"body"`
}

func runServer() error {
	var req serverRequest
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		return err
	}
	s := &serverOps{signed: []byte(req.Signed), ids: map[module.Version]int64{}}
	for i, text := range req.Records {
		s.records = append(s.records, []byte(text))
		h, err := tlog.StoredHashes(int64(i), []byte(text), s)
		if err != nil {
			return err
		}
		s.hashes = append(s.hashes, h...)
		f := strings.Fields(text)
		if len(f) < 2 {
			return fmt.Errorf("record %d: %q", i, text)
		}
		s.ids[module.Version{Path: f[0], Version: f[1]}] = int64(i)
	}
	srv := sumdb.NewServer(s)
	var answers []serverAnswer
	for _, p := range req.Paths {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "http://sumdb.test/", nil)
		r.URL.Path = p
		srv.ServeHTTP(w, r)
		answers = append(answers, serverAnswer{
			Status:      w.Code,
			ContentType: w.Header().Get("Content-Type"),
			Body:        w.Body.Bytes(),
		})
	}
	return json.NewEncoder(os.Stdout).Encode(answers)
}

