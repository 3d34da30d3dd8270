#!/usr/bin/env python3
"""benches/gen_modules.py — the fixture module sets of benches/load.sh and benches/bench.sh, laid
out as a Go module proxy (ROOT/<module>/@v/...) for a static origin to serve.

    gen_modules.py ROOT MODULE BIG_MIB [--cold N] [--deps N --main DIR]

MODULE gets versions with .info/.mod/.zip, a list and @latest:
  v1.0.0  1 MiB zip          v1.1.0  64 KiB zip        v1.2.0  1 MiB zip
  v1.3.0  100 KiB zip (bench.sh's warm fan-in)
  v1.4.0 .. v1.4.<N-1>  100 KiB zips, --cold N (default 10): one per cold fan-in run, so that
          each cold run asks for an object neither cache has seen
  v0.9.0 and v0.9.1  BIG_MIB MiB zips (same bytes, hard links; only when BIG_MIB > 0)
The list names every version; @latest is the highest one.

--deps N (with --main DIR) also writes N small modules example.com/dep/m000 .. (one version,
v1.0.0, each a valid Go module: the zip holds `<module>@v1.0.0/go.mod`, equal to the .mod file,
and a Go file) and, in DIR, a main module example.com/benchmain whose go.mod requires all N:
`go mod download all` in DIR fetches the N modules (bench.sh's go mod download section).
"""
import argparse, datetime, json, os, zipfile

ap = argparse.ArgumentParser()
ap.add_argument("root")
ap.add_argument("module")
ap.add_argument("big_mib", type=int)
ap.add_argument("--cold", type=int, default=10, help="100 KiB versions v1.4.0.. for cold runs")
ap.add_argument("--deps", type=int, default=0, help="small modules example.com/dep/mNNN")
ap.add_argument("--main", help="directory of the main module requiring the --deps modules")
args = ap.parse_args()
if args.deps and not args.main:
    ap.error("--deps needs --main DIR")
if not 0 <= args.cold <= 100 or not 0 <= args.deps <= 1000:
    ap.error("--cold: 0..100, --deps: 0..1000")

EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def semver_key(v):
    return tuple(int(x) for x in v.lstrip("v").split("."))


def stamp(i):
    return (EPOCH + datetime.timedelta(days=i)).strftime("%Y-%m-%dT%H:%M:%SZ")


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def go_mod(module):
    return f"module {module}\n\ngo 1.21\n".encode()


def make_zip(path, module, version, files, payload=0):
    """A Go module zip: `files` (name -> bytes) under `<module>@<version>/`, plus, when payload
    > 0, one stored file of that many random bytes."""
    prefix = f"{module}@{version}/"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, data in files.items():
            z.writestr(prefix + name, data)
        if payload > 0:
            with z.open(prefix + "data.bin", "w", force_zip64=payload > (1 << 31)) as f:
                left = payload
                while left:
                    n = min(left, 1 << 20)
                    f.write(os.urandom(n))
                    left -= n


def write_module(root, module, versions):
    """versions: version -> (zip size in bytes, or a dict of extra files); .info/.mod/.zip for
    each, then list and @latest."""
    vdir = os.path.join(root, module, "@v")
    order = sorted(versions, key=semver_key)
    for v in order:
        spec = versions[v]
        mod = go_mod(module)
        write(os.path.join(vdir, v + ".info"),
              json.dumps({"Version": v, "Time": stamp(order.index(v))}).encode() + b"\n")
        write(os.path.join(vdir, v + ".mod"), mod)
        if isinstance(spec, dict):
            make_zip(os.path.join(vdir, v + ".zip"), module, v, {"go.mod": mod, **spec})
        else:
            make_zip(os.path.join(vdir, v + ".zip"), module, v,
                     {"go.mod": mod, "bench.go": b"package bench\n"}, max(0, spec - 400))
    write(os.path.join(vdir, "list"), "".join(v + "\n" for v in order).encode())
    latest = order[-1]
    write(os.path.join(root, module, "@latest"),
          json.dumps({"Version": latest, "Time": stamp(order.index(latest))}).encode() + b"\n")
    return vdir


root, module, big_mib = args.root, args.module, args.big_mib
versions = {"v1.0.0": 1 << 20, "v1.1.0": 64 << 10, "v1.2.0": 1 << 20, "v1.3.0": 100 << 10}
for i in range(args.cold):
    versions[f"v1.4.{i}"] = 100 << 10
if big_mib > 0:
    versions["v0.9.0"] = big_mib << 20
    versions["v0.9.1"] = {}  # placeholder: replaced by hard links to v0.9.0's zip below
vdir = write_module(root, module, versions)
if big_mib > 0:
    # The slow-client miss (load.sh) needs a second large version; the bytes may be the same.
    os.remove(os.path.join(vdir, "v0.9.1.zip"))
    os.link(os.path.join(vdir, "v0.9.0.zip"), os.path.join(vdir, "v0.9.1.zip"))

if args.deps:
    width = max(3, len(str(args.deps - 1)))
    deps = [f"example.com/dep/m{i:0{width}d}" for i in range(args.deps)]
    for i, dep in enumerate(deps):
        name = dep.rsplit("/", 1)[1]
        src = (f"// Package {name} is a generated benchmark dependency.\n"
               f"package {name}\n\n"
               f"// N is this module's number.\nconst N = {i}\n\n"
               f"// Sum adds N to x.\nfunc Sum(x int) int {{ return x + N }}\n")
        write_module(root, dep, {"v1.0.0": {f"{name}.go": src.encode()}})
    main = ("module example.com/benchmain\n\ngo 1.21\n\nrequire (\n"
            + "".join(f"\t{d} v1.0.0\n" for d in deps) + ")\n")
    write(os.path.join(args.main, "go.mod"), main.encode())
