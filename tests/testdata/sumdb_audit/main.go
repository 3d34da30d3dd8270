// Command sumdb_audit is an independent check of the checksum database a modgate gateway keeps
// (`checksum_log:`), done with Go's own golang.org/x/mod/sumdb/tlog and sumdb/note (the copy
// vendored in Go's source tree, the code the go command itself runs) over the database's HTTP
// protocol only:
//
//  1. /sumdb/<name>/latest must be a note signed by the given verifier key (note.Open with
//     note.VerifierList), whose text is a tree (tlog.ParseTree).
//  2. Every data tile of that tree (tile/8/data/N, the last one partial: .p/W) is read and
//     split into records as sumdb.Server writes them (tlog.FormatRecord: the id, the text, a
//     blank line; tlog.ParseRecord reads them back); ids must run 0..N-1.
//  3. The stored hashes of every record are recomputed (tlog.StoredHashes), then the tree hash
//     (tlog.TreeHash): it must be the signed tree's hash.
//  4. Every hash tile of the tree (every level: tlog.NewTiles(8, 0, N)) is read and must be
//     what tlog.ReadTileData gives over the recomputed hashes; a level-0 difference names the
//     record.
//  5. Every record must be the two go.sum lines of one module version (path version h1:…,
//     path version/go.mod h1:…), each version at most once.
//
// When everything agrees, it writes one JSON line per record on stdout —
// {"id":…,"path":…,"version":…,"zip_h1":…,"mod_h1":…} — and a summary on stderr, and exits 0.
// Any difference is a line "MISMATCH: …" on stderr (all of them, not only the first) and exit
// status 1; a log it cannot read (HTTP errors, a malformed answer, a bad signature) exits 1
// too, with "FAIL: …"; bad usage exits 2.
//
//	sumdb_audit -url http://127.0.0.1:8080 -name sum.corp.example -key 'sum.corp.example+…' \
//	    -user alice   # password in $SUMDB_AUDIT_PASSWORD
//
// Every flag may be given in the environment instead: SUMDB_AUDIT_URL, SUMDB_AUDIT_NAME,
// SUMDB_AUDIT_KEY, SUMDB_AUDIT_USER, SUMDB_AUDIT_PASSWORD (-password exists but puts the
// password on the command line).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// The tile height the go command reads, and the only one modgate serves.
const tileHeight = 8

// Largest answer read from the gateway: a full hash tile is 8 KiB, a full data tile of long
// module paths some hundred KiB.
const maxBody = 64 << 20

// A record as written on stdout.
type record struct {
	ID      int64  `json:"id"`
	Path    string `json:"path"`
	Version string `json:"version"`
	ZipH1   string `json:"zip_h1"`
	ModH1   string `json:"mod_h1"`
}

// The gateway's checksum database, read over HTTP with basic auth.
type remote struct {
	base     string
	user     string
	password string
	client   *http.Client
}

// get reads <base>/sumdb/<name>/<path>; anything but 200 is an error naming the answer.
func (r *remote) get(path string) ([]byte, error) {
	url := r.base + "/" + path
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return nil, err
	}
	if r.user != "" {
		req.SetBasicAuth(r.user, r.password)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %v", url, err)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("GET %s: answer larger than %d bytes", url, maxBody)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// audit collects the differences found.
type audit struct {
	mismatches []string
}

func (a *audit) mismatch(format string, args ...any) {
	a.mismatches = append(a.mismatches, fmt.Sprintf(format, args...))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func env(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return fallback
}

func main() {
	base := flag.String("url", env("SUMDB_AUDIT_URL", ""), "the gateway's base URL (http://host:port)")
	name := flag.String("name", env("SUMDB_AUDIT_NAME", ""), "the log's name (default: the key's)")
	vkey := flag.String("key", env("SUMDB_AUDIT_KEY", ""), "the log's verifier key (name+id+key)")
	user := flag.String("user", env("SUMDB_AUDIT_USER", ""), "basic-auth user (a reader of the log)")
	password := flag.String("password", env("SUMDB_AUDIT_PASSWORD", ""), "basic-auth password")
	timeout := flag.Duration("timeout", 30*time.Second, "timeout of each HTTP request")
	flag.Parse()
	if *base == "" || *vkey == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: sumdb_audit -url URL -key VKEY [-name NAME] [-user U] (password in $SUMDB_AUDIT_PASSWORD)")
		os.Exit(2)
	}
	verifier, err := note.NewVerifier(*vkey)
	if err != nil {
		fmt.Fprintf(os.Stderr, "usage: -key %q: %v\n", *vkey, err)
		os.Exit(2)
	}
	if *name == "" {
		*name = verifier.Name()
	}
	if *name != verifier.Name() {
		fmt.Fprintf(os.Stderr, "usage: the key is %s's, not %s's\n", verifier.Name(), *name)
		os.Exit(2)
	}
	r := &remote{
		base:     strings.TrimSuffix(*base, "/") + "/sumdb/" + *name,
		user:     *user,
		password: *password,
		client:   &http.Client{Timeout: *timeout},
	}

	// 1. The signed tree.
	latest, err := r.get("latest")
	if err != nil {
		fail("%v", err)
	}
	signed, err := note.Open(latest, note.VerifierList(verifier))
	if err != nil {
		fail("/latest does not verify with %s: %v", *vkey, err)
	}
	tree, err := tlog.ParseTree([]byte(signed.Text))
	if err != nil {
		fail("/latest is not a tree: %v", err)
	}

	// 2. Every record, from the data tiles.
	var tiles []tlog.Tile
	if tree.N > 0 {
		tiles = tlog.NewTiles(tileHeight, 0, tree.N)
	}
	texts := make([][]byte, 0, tree.N)
	dataTiles := 0
	for _, t := range tiles {
		if t.L != 0 {
			continue
		}
		data := t
		data.L = -1
		dataTiles++
		body, err := r.get(data.Path())
		if err != nil {
			fail("%v", err)
		}
		start := t.N << tileHeight
		for i := int64(0); i < int64(t.W); i++ {
			id, text, rest, err := tlog.ParseRecord(body)
			if err != nil {
				fail("%s: record %d: %v", data.Path(), start+i, err)
			}
			if id != start+i {
				fail("%s: record %d has id %d", data.Path(), start+i, id)
			}
			texts = append(texts, text)
			body = rest
		}
		if len(body) != 0 {
			fail("%s: %d bytes after its %d records", data.Path(), len(body), t.W)
		}
	}
	if int64(len(texts)) != tree.N {
		fail("the data tiles hold %d records, the signed tree %d", len(texts), tree.N)
	}

	// 3. The stored hashes and the tree hash, recomputed.
	var hashes []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if x < 0 || x >= int64(len(hashes)) {
				return nil, fmt.Errorf("stored hash %d not computed (have %d)", x, len(hashes))
			}
			out[i] = hashes[x]
		}
		return out, nil
	})
	for id, text := range texts {
		more, err := tlog.StoredHashes(int64(id), text, reader)
		if err != nil {
			fail("stored hashes of record %d: %v", id, err)
		}
		hashes = append(hashes, more...)
	}
	a := &audit{}
	if tree.N > 0 {
		th, err := tlog.TreeHash(tree.N, reader)
		if err != nil {
			fail("tree hash: %v", err)
		}
		if th != tree.Hash {
			a.mismatch("tree hash: the %d records served hash to %v, the signed tree says %v", tree.N, th, tree.Hash)
		}
	}

	// 4. Every hash tile, against the recomputed hashes.
	for _, t := range tiles {
		want, err := tlog.ReadTileData(t, reader)
		if err != nil {
			fail("hashes of %s: %v", t.Path(), err)
		}
		got, err := r.get(t.Path())
		if err != nil {
			fail("%v", err)
		}
		if bytes.Equal(got, want) {
			continue
		}
		if len(got) != len(want) {
			a.mismatch("%s: %d bytes, want %d", t.Path(), len(got), len(want))
			continue
		}
		for i := 0; i < t.W; i++ {
			g, w := got[i*tlog.HashSize:(i+1)*tlog.HashSize], want[i*tlog.HashSize:(i+1)*tlog.HashSize]
			if bytes.Equal(g, w) {
				continue
			}
			n := t.N<<tileHeight + int64(i)
			var gh, wh tlog.Hash
			copy(gh[:], g)
			copy(wh[:], w)
			if t.L == 0 {
				a.mismatch("%s: record %d (%s) as served hashes to %v, the hash tile says %v", t.Path(), n, firstLine(texts[n]), wh, gh)
			} else {
				a.mismatch("%s: hash %d of level %d is %v recomputed, the hash tile says %v", t.Path(), n, t.L*tileHeight, wh, gh)
			}
		}
	}

	// 5. The records as go.sum lines.
	records := make([]record, 0, len(texts))
	seen := make(map[string]int64)
	for id, text := range texts {
		rec, err := parseRecord(int64(id), text)
		if err != nil {
			a.mismatch("record %d: %v: %q", id, err, text)
			continue
		}
		key := rec.Path + "@" + rec.Version
		if first, ok := seen[key]; ok {
			a.mismatch("records %d and %d both state %s", first, id, key)
		}
		seen[key] = int64(id)
		records = append(records, rec)
	}

	if len(a.mismatches) > 0 {
		for _, m := range a.mismatches {
			fmt.Fprintln(os.Stderr, "MISMATCH:", m)
		}
		fmt.Fprintf(os.Stderr, "FAIL: %s: %d mismatch(es) in the tree of %d records signed by %s\n",
			*name, len(a.mismatches), tree.N, verifier.Name())
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	for _, rec := range records {
		if err := out.Encode(rec); err != nil {
			fail("writing: %v", err)
		}
	}
	fmt.Fprintf(os.Stderr, "OK: %s: %d records, %d data tiles, %d hash tiles; tree hash %v recomputed, signed by %s\n",
		*name, tree.N, dataTiles, len(tiles), tree.Hash, verifier.Name())
}

// parseRecord reads a record's text: the two go.sum lines of one module version.
func parseRecord(id int64, text []byte) (record, error) {
	lines := strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
	if len(lines) != 2 {
		return record{}, fmt.Errorf("%d lines, want 2 go.sum lines", len(lines))
	}
	zip, mod := strings.Fields(lines[0]), strings.Fields(lines[1])
	if len(zip) != 3 || len(mod) != 3 || strings.Join(zip, " ") != lines[0] || strings.Join(mod, " ") != lines[1] {
		return record{}, fmt.Errorf("not two go.sum lines")
	}
	if mod[0] != zip[0] || mod[1] != zip[1]+"/go.mod" {
		return record{}, fmt.Errorf("lines of two module versions")
	}
	if !strings.HasPrefix(zip[2], "h1:") || !strings.HasPrefix(mod[2], "h1:") {
		return record{}, fmt.Errorf("hashes other than h1:")
	}
	return record{ID: id, Path: zip[0], Version: zip[1], ZipH1: zip[2], ModH1: mod[2]}, nil
}

// firstLine is a record's first go.sum line without its hash, for messages.
func firstLine(text []byte) string {
	line, _, _ := strings.Cut(string(text), "\n")
	if i := strings.LastIndexByte(line, ' '); i >= 0 {
		return line[:i]
	}
	return line
}
