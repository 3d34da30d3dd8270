#!/usr/bin/env python3
"""benches/scale_urls.py — the URL lists of benches/scale.sh (issue 22: a million cached objects).

    scale_urls.py BASE N all    PARTS OUT     every object once, in PARTS files OUT.0 .. OUT.<PARTS-1>
    scale_urls.py BASE N spread K PARTS OUT SEED   K distinct objects (random), every file all K,
                                                   each file starting at another offset
    scale_urls.py BASE N random K PARTS OUT SEED   K objects drawn uniformly (with replacement),
                                                   K / PARTS to a file

Object i of N (0 <= i < N, N a multiple of 20) is version v1.<j>.0 of module
example.com/scale/m<NNNNNN>, its `.info` for even i and its `.mod` for odd i: object 2p and 2p+1
are version pair p, module p // 10, j = p % 10. So N objects are N/20 modules of 10 versions,
each version's `.info` and `.mod` (the two small artifacts the ledger records for every
version a `go` build resolves). BASE is the gateway's URL (https://127.0.0.1:PORT); each line is
BASE/<path>, as `h2load -i` wants (one client per file walks its file in order).
"""
import random
import sys

MODULE = "example.com/scale/m"


def path(i):
    pair, kind = divmod(i, 2)
    module, j = divmod(pair, 10)
    return f"{MODULE}{module:06d}/@v/v1.{j}.0.{('info', 'mod')[kind]}"


def write_parts(out, parts, lines_of):
    for k in range(parts):
        with open(f"{out}.{k}", "w") as f:
            for line in lines_of(k):
                f.write(line)
                f.write("\n")


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    base, n, mode = argv[1].rstrip("/"), int(argv[2]), argv[3]
    if n <= 0 or n % 20:
        sys.exit("N must be a positive multiple of 20")
    if mode == "all":
        parts, out = int(argv[4]), argv[5]
        write_parts(out, parts, lambda k: (f"{base}/{path(i)}" for i in range(k, n, parts)))
    elif mode in ("spread", "random"):
        k_total, parts, out, seed = int(argv[4]), int(argv[5]), argv[6], int(argv[7])
        rng = random.Random(seed)
        if mode == "spread":
            if k_total > n:
                sys.exit("spread: K must not exceed N")
            chosen = [f"{base}/{path(i)}" for i in rng.sample(range(n), k_total)]
            step = max(1, k_total // parts)
            write_parts(
                out, parts, lambda k: chosen[(k * step) % k_total:] + chosen[:(k * step) % k_total]
            )
        else:
            per = k_total // parts
            write_parts(
                out, parts, lambda k: (f"{base}/{path(rng.randrange(n))}" for _ in range(per))
            )
    else:
        sys.exit(f"unknown mode {mode!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
