// Command oracle answers questions about a checksum-database log with Go's own
// golang.org/x/mod/sumdb/tlog, sumdb/note and sumdb (Client) packages (the copy vendored
// in Go's source tree), so modgate-tlog's tests can compare their answers byte for byte.
// It reads one JSON request on stdin and writes one JSON response on stdout;
// tests/oracle.rs builds and runs it offline.
package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A request: the log's records, then the questions to answer about it.
type request struct {
	Records     []string   `json:"records"`
	Tiles       []string   `json:"tiles"`
	ParseTiles  []string   `json:"parse_tiles"`
	NewTiles    [][2]int64 `json:"new_tiles"`
	ProveRecord [][2]int64 `json:"prove_record"`
	ProveTree   [][2]int64 `json:"prove_tree"`
	CheckRecord []check    `json:"check_record"`
	CheckTree   []check    `json:"check_tree"`
	Generate    []string   `json:"generate"`
	Sign        []sign     `json:"sign"`
	Open        []open     `json:"open"`
	TileReads   []tileRead `json:"tile_reads"`
	Clients     []client   `json:"clients"`
}

// A record to check in the tree of the first N records, through tlog.TileHashReader over
// tiles of the log (as sumdb.Client.checkRecord reads it), with one byte of one tile flipped
// if Forge names a tile.
type tileRead struct {
	N     int64  `json:"n"`
	ID    int64  `json:"id"`
	Forge string `json:"forge"`
	At    int    `json:"at"`
}

// A sumdb.Client whose server is Files (remote path → base64 content), with key VKey and an
// empty latest tree, asked each of Lookups ([path, version]) on a fresh Client.
type client struct {
	VKey    string            `json:"vkey"`
	Files   map[string]string `json:"files"`
	Lookups [][2]string       `json:"lookups"`
}

// A proof to check: that tree T contains record N (CheckRecord) or tree N (CheckTree).
type check struct {
	T     int64    `json:"t"`
	N     int64    `json:"n"`
	Proof []string `json:"proof"`
}

type sign struct {
	SKey string `json:"skey"`
	Text string `json:"text"`
}

type open struct {
	VKey string `json:"vkey"`
	Msg  string `json:"msg"`
}

type tile struct {
	Err string `json:"err,omitempty"`
	H   int    `json:"h"`
	L   int    `json:"l"`
	N   int64  `json:"n"`
	W   int    `json:"w"`
}

type key struct {
	SKey string `json:"skey"`
	VKey string `json:"vkey"`
}

type opened struct {
	Err  string   `json:"err,omitempty"`
	Text string   `json:"text"`
	Sigs []string `json:"sigs"` // name+keyid of each verified signature
}

type response struct {
	StoredHashes []string     `json:"stored_hashes"`
	TreeHashes   []string     `json:"tree_hashes"` // index: tree size 0..len(records)
	Tiles        []string     `json:"tiles"`       // base64 of each tile's content
	ParseTiles   []tile       `json:"parse_tiles"`
	NewTiles     [][]string   `json:"new_tiles"`
	ProveRecord  [][]string   `json:"prove_record"`
	ProveTree    [][]string   `json:"prove_tree"`
	CheckRecord  []string     `json:"check_record"` // "" when the proof checks, else Go's error
	CheckTree    []string     `json:"check_tree"`
	Generate     []key        `json:"generate"`
	Sign         []string     `json:"sign"`
	Open         []opened     `json:"open"`
	TileReads    []readAnswer `json:"tile_reads"`
	Clients      [][]lookedUp `json:"clients"`
}

type readAnswer struct {
	Tiles      []string `json:"tiles"`       // what ReadTiles was asked, in order, for the leaf
	Err        string   `json:"err"`         // ReadHashes' error, "" if none
	LeafOK     bool     `json:"leaf_ok"`     // the leaf hash read is the log's
	ProofTiles []string `json:"proof_tiles"` // what ReadTiles was asked for ProveRecord
	Proof      []string `json:"proof"`       // ProveRecord through the TileHashReader
}

type lookedUp struct {
	Lines    []string `json:"lines"`     // Lookup(path, version)
	ModLines []string `json:"mod_lines"` // Lookup(path, version+"/go.mod")
	Err      string   `json:"err"`
	Remote   []string `json:"remote"` // the paths read from the server, sorted
}

// recordingTiles serves hash tiles of a log and records what it is asked for.
type recordingTiles struct {
	reader tlog.HashReader
	forge  string
	at     int
	asked  []string
}

func (r *recordingTiles) Height() int { return 8 }

func (r *recordingTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	var out [][]byte
	for _, t := range tiles {
		r.asked = append(r.asked, t.Path())
		data, err := tlog.ReadTileData(t, r.reader)
		if err != nil {
			return nil, err
		}
		if t.Path() == r.forge {
			data[r.at] ^= 0x40
		}
		out = append(out, data)
	}
	return out, nil
}

func (r *recordingTiles) SaveTiles([]tlog.Tile, [][]byte) {}

// clientOps is a checksum database server made of fixed files, with no cache.
type clientOps struct {
	vkey   string
	files  map[string][]byte
	mu     sync.Mutex
	remote []string
}

func (o *clientOps) ReadRemote(path string) ([]byte, error) {
	o.mu.Lock()
	o.remote = append(o.remote, path)
	o.mu.Unlock()
	if data, ok := o.files[path]; ok {
		return data, nil
	}
	return nil, fmt.Errorf("%s: 404 Not Found", path)
}

func (o *clientOps) ReadConfig(file string) ([]byte, error) {
	if file == "key" {
		return []byte(o.vkey), nil
	}
	if strings.HasSuffix(file, "/latest") {
		return []byte{}, nil
	}
	return nil, fmt.Errorf("unknown config %s", file)
}

func (o *clientOps) WriteConfig(file string, old, new []byte) error { return nil }
func (o *clientOps) ReadCache(file string) ([]byte, error)          { return nil, os.ErrNotExist }
func (o *clientOps) WriteCache(file string, data []byte)            {}
func (o *clientOps) Log(msg string)                                 {}
func (o *clientOps) SecurityError(msg string)                       {}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "oracle:", err)
		os.Exit(1)
	}
}

func run() error {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		return err
	}
	var resp response
	b64 := base64.StdEncoding.EncodeToString

	// The log, grown one record at a time as a server would.
	var hashes []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if x < 0 || x >= int64(len(hashes)) {
				return nil, fmt.Errorf("no stored hash %d", x)
			}
			out[i] = hashes[x]
		}
		return out, nil
	})
	th, _ := tlog.TreeHash(0, reader)
	resp.TreeHashes = append(resp.TreeHashes, th.String())
	for i, r := range req.Records {
		h, err := tlog.StoredHashes(int64(i), []byte(r), reader)
		if err != nil {
			return err
		}
		hashes = append(hashes, h...)
		th, err := tlog.TreeHash(int64(i+1), reader)
		if err != nil {
			return err
		}
		resp.TreeHashes = append(resp.TreeHashes, th.String())
	}
	for _, h := range hashes {
		resp.StoredHashes = append(resp.StoredHashes, h.String())
	}
	treeHash := func(n int64) tlog.Hash {
		h, err := tlog.TreeHash(n, reader)
		if err != nil {
			panic(err)
		}
		return h
	}

	// Tiles: hash tiles as tlog.ReadTileData, data tiles as sumdb.Server builds them.
	for _, p := range req.Tiles {
		t, err := tlog.ParseTilePath(p)
		if err != nil {
			return err
		}
		var data []byte
		if t.L == -1 {
			start := t.N << uint(t.H)
			for i := int64(0); i < int64(t.W); i++ {
				msg, err := tlog.FormatRecord(start+i, []byte(req.Records[start+i]))
				if err != nil {
					return err
				}
				data = append(data, msg...)
			}
		} else if data, err = tlog.ReadTileData(t, reader); err != nil {
			return err
		}
		resp.Tiles = append(resp.Tiles, b64(data))
	}
	for _, p := range req.ParseTiles {
		t, err := tlog.ParseTilePath(p)
		if err != nil {
			resp.ParseTiles = append(resp.ParseTiles, tile{Err: err.Error()})
		} else {
			resp.ParseTiles = append(resp.ParseTiles, tile{H: t.H, L: t.L, N: t.N, W: t.W})
		}
	}
	for _, on := range req.NewTiles {
		paths := []string{}
		for _, t := range tlog.NewTiles(8, on[0], on[1]) {
			paths = append(paths, t.Path())
		}
		resp.NewTiles = append(resp.NewTiles, paths)
	}

	// Proofs Go makes, and verdicts on proofs made elsewhere.
	proofText := func(p []tlog.Hash) []string {
		out := []string{}
		for _, h := range p {
			out = append(out, h.String())
		}
		return out
	}
	for _, tn := range req.ProveRecord {
		p, err := tlog.ProveRecord(tn[0], tn[1], reader)
		if err != nil {
			return err
		}
		resp.ProveRecord = append(resp.ProveRecord, proofText(p))
	}
	for _, tn := range req.ProveTree {
		p, err := tlog.ProveTree(tn[0], tn[1], reader)
		if err != nil {
			return err
		}
		resp.ProveTree = append(resp.ProveTree, proofText(p))
	}
	parseProof := func(ss []string) ([]tlog.Hash, error) {
		var p []tlog.Hash
		for _, s := range ss {
			h, err := tlog.ParseHash(s)
			if err != nil {
				return nil, err
			}
			p = append(p, h)
		}
		return p, nil
	}
	verdict := func(err error) string {
		if err != nil {
			return err.Error()
		}
		return ""
	}
	for _, c := range req.CheckRecord {
		p, err := parseProof(c.Proof)
		if err == nil {
			leaf := tlog.RecordHash([]byte(req.Records[c.N]))
			err = tlog.CheckRecord(p, c.T, treeHash(c.T), c.N, leaf)
		}
		resp.CheckRecord = append(resp.CheckRecord, verdict(err))
	}
	for _, c := range req.CheckTree {
		p, err := parseProof(c.Proof)
		if err == nil {
			err = tlog.CheckTree(p, c.T, treeHash(c.T), c.N, treeHash(c.N))
		}
		resp.CheckTree = append(resp.CheckTree, verdict(err))
	}

	// Signed notes.
	for _, name := range req.Generate {
		skey, vkey, err := note.GenerateKey(rand.Reader, name)
		if err != nil {
			return err
		}
		resp.Generate = append(resp.Generate, key{skey, vkey})
	}
	for _, s := range req.Sign {
		signer, err := note.NewSigner(s.SKey)
		if err != nil {
			return err
		}
		msg, err := note.Sign(&note.Note{Text: s.Text}, signer)
		if err != nil {
			return err
		}
		resp.Sign = append(resp.Sign, string(msg))
	}
	for _, o := range req.Open {
		verifier, err := note.NewVerifier(o.VKey)
		if err != nil {
			resp.Open = append(resp.Open, opened{Err: err.Error()})
			continue
		}
		n, err := note.Open([]byte(o.Msg), note.VerifierList(verifier))
		if err != nil {
			resp.Open = append(resp.Open, opened{Err: err.Error()})
			continue
		}
		out := opened{Text: n.Text, Sigs: []string{}}
		for _, s := range n.Sigs {
			out.Sigs = append(out.Sigs, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
		}
		resp.Open = append(resp.Open, out)
	}

	// Records checked through tiles, as sumdb.Client.checkRecord does.
	for _, q := range req.TileReads {
		tree := tlog.Tree{N: q.N, Hash: treeHash(q.N)}
		tiles := &recordingTiles{reader: reader, forge: q.Forge, at: q.At, asked: []string{}}
		var ans readAnswer
		leaf := tlog.StoredHashIndex(0, q.ID)
		got, err := tlog.TileHashReader(tree, tiles).ReadHashes([]int64{leaf})
		ans.Tiles = tiles.asked
		ans.Err = verdict(err)
		if err == nil {
			ans.LeafOK = got[0] == hashes[leaf]
		}
		if q.Forge == "" {
			tiles := &recordingTiles{reader: reader, asked: []string{}}
			p, err := tlog.ProveRecord(q.N, q.ID, tlog.TileHashReader(tree, tiles))
			if err != nil {
				return err
			}
			ans.ProofTiles = tiles.asked
			ans.Proof = proofText(p)
		}
		resp.TileReads = append(resp.TileReads, ans)
	}

	// Lookups by Go's own sumdb.Client.
	for _, c := range req.Clients {
		files := make(map[string][]byte)
		for path, b := range c.Files {
			data, err := base64.StdEncoding.DecodeString(b)
			if err != nil {
				return err
			}
			files[path] = data
		}
		var answers []lookedUp
		for _, l := range c.Lookups {
			ops := &clientOps{vkey: c.VKey, files: files}
			cl := sumdb.NewClient(ops)
			var ans lookedUp
			var err error
			ans.Lines, err = cl.Lookup(l[0], l[1])
			if err == nil {
				ans.ModLines, err = cl.Lookup(l[0], l[1]+"/go.mod")
			}
			ans.Err = verdict(err)
			ans.Remote = ops.remote
			sort.Strings(ans.Remote)
			answers = append(answers, ans)
		}
		resp.Clients = append(resp.Clients, answers)
	}

	return json.NewEncoder(os.Stdout).Encode(resp)
}
