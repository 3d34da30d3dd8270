#!/usr/bin/env python3
"""benches/gen_modules.py ROOT MODULE BIG_MIB — the fixture module set of benches/load.sh and
benches/bench.sh: versions with .info/.mod/.zip (zips of 1 MiB, 64 KiB, 1 MiB, and BIG_MIB MiB
when > 0), a list and @latest, under ROOT/MODULE/@v, for a static origin to serve."""
import json, os, sys, zipfile

root, module, big_mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
vdir = os.path.join(root, module, "@v")
os.makedirs(vdir, exist_ok=True)

def write(name, data):
    with open(os.path.join(vdir, name), "wb") as f:
        f.write(data)

def make_zip(version, size):
    """A Go module zip of about `size` bytes (one stored file of random bytes)."""
    prefix = f"{module}@{version}/"
    path = os.path.join(vdir, version + ".zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        z.writestr(prefix + "go.mod", f"module {module}\n\ngo 1.21\n")
        z.writestr(prefix + "bench.go", "package bench\n")
        payload = max(0, size - 400)
        with z.open(prefix + "data.bin", "w", force_zip64=payload > (1 << 31)) as f:
            left = payload
            while left:
                n = min(left, 1 << 20)
                f.write(os.urandom(n))
                left -= n
    return path

versions = {"v1.0.0": 1 << 20, "v1.1.0": 64 << 10, "v1.2.0": 1 << 20}
if big_mib > 0:
    versions["v0.9.0"] = big_mib << 20
for i, (v, size) in enumerate(versions.items()):
    write(v + ".info", json.dumps({"Version": v, "Time": f"2024-01-0{i + 1}T00:00:00Z"}).encode() + b"\n")
    write(v + ".mod", f"module {module}\n\ngo 1.21\n".encode())
    make_zip(v, size)
if big_mib > 0:
    # The slow-client miss needs a second large version; the bytes may be the same.
    for ext in (".info", ".mod", ".zip"):
        src = os.path.join(vdir, "v0.9.0" + ext)
        dst = os.path.join(vdir, "v0.9.1" + ext)
        if ext == ".info":
            write("v0.9.1.info", json.dumps({"Version": "v0.9.1", "Time": "2023-12-31T00:00:00Z"}).encode() + b"\n")
        else:
            os.link(src, dst)
write("list", "".join(v + "\n" for v in versions).encode())
with open(os.path.join(root, module, "@latest"), "wb") as f:
    f.write(json.dumps({"Version": "v1.2.0", "Time": "2024-01-03T00:00:00Z"}).encode() + b"\n")
