//! The `retract` parser of modgate-protocol against the real `go`: for every `go.mod` below
//! (written by hand for each form, and generated over the places a rationale comment can be),
//! `go mod edit -json` (Go 1.23's `modfile`) and `parse_retractions` must give the same
//! Low/High/Rationale list, and must refuse the same syntax errors. It lives here, not beside
//! the parser, because modgate-protocol cannot depend on the testkit (which depends on it).

use modgate_protocol::{parse_retractions, Retraction};
use modgate_testkit::GoEnv;

/// (low, high, rationale) as `go mod edit -json` prints them; `Err` with go's stderr if it
/// refuses the file.
fn go_retractions(
    env: &GoEnv,
    n: usize,
    gomod: &str,
) -> Result<Vec<(String, String, String)>, String> {
    let dir = env.work().join(format!("m{n}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("go.mod"), gomod).expect("write go.mod");
    let run = env.go_in(&dir, &["mod", "edit", "-json"]);
    if !run.ok() {
        return Err(run.stderr());
    }
    let json: serde_json::Value =
        serde_json::from_str(&run.stdout()).expect("go mod edit -json output");
    let list = json["Retract"].as_array().cloned().unwrap_or_default();
    Ok(list
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("Low"), s("High"), s("Rationale"))
        })
        .collect())
}

fn ours(gomod: &str) -> Result<Vec<(String, String, String)>, String> {
    parse_retractions(gomod)
        .map(|v| {
            v.into_iter()
                .map(
                    |Retraction {
                         low,
                         high,
                         rationale,
                     }| (low, high, rationale),
                )
                .collect()
        })
        .map_err(|e| e.to_string())
}

/// Hand-written files: every form, and the rationale rules.
fn written() -> Vec<String> {
    let head = "module example.com/m\n\ngo 1.21\n";
    [
        "retract v1.0.1\n",
        "retract [v1.0.0, v1.0.5]\n",
        "retract [v1.0.0,v1.0.5] // Tight.\n",
        "// Above.\nretract v1.0.1 // Suffix.\n",
        "// One.\n//Two\n//   Three.   \nretract v1.0.1\n",
        "// Detached.\n\nretract v1.0.1\n",
        "// Detached.\n\n// Attached.\nretract v1.0.1\n",
        "retract (\n\tv1.0.0\n\t[v1.1.0, v1.2.0]\n)\n",
        "// Block.\nretract (\n\tv1.0.0\n\t// Own.\n\tv1.0.1\n\tv1.0.2 // Suffix.\n)\n",
        "// Block.\nretract (\n\tv1.0.0\n\n\tv1.0.1\n)\n",
        "// Block.\nretract (\n\n\tv1.0.0\n)\n",
        "// Block.\nretract ( // Paren.\n\tv1.0.0\n) // Close.\n",
        "retract (\n\t// A.\n\n\t// B.\n\tv1.0.0\n\t// Trailing.\n)\n",
        "retract (\n\tv1.0.0\n\t// A.\n\n\n\tv1.0.1\n)\n",
        "retract \"v1.0.3\"\nretract [\"v1.0.4\", \"v1.0.5\"] // Quoted.\n",
        "retract v1.2 // Shorthand kept as written.\n",
        "retract v2.0.0+incompatible\n",
        "retract v1.0.0-20240101000000-abcdefabcdef // Pseudo.\n",
        "retract v1.0.1//NoSpace\n",
        "retract v1.0.1 // Unicode: déjà ☃\n",
        "retract v1.0.1\r\n// CRLF.\r\nretract v1.0.2\r\n",
        "retract ()\nretract v1.0.9\n",
        "require example.com/other v1.0.0 // Not a rationale.\nretract v1.0.1\n",
        "retract v1.0.0\n\n\n// Far.\n\n\nretract v1.0.1\n",
        "// Before require.\nrequire (\n\texample.com/a v1.0.0\n)\nretract v1.0.1\n",
        // Syntax errors both must refuse.
        "retract (\n\tv1.0.0\n",
        "retract (\n\tv1.0.0\n) extra\n",
        "retract \"v1.0.0\n",
        "/* no */\nretract v1.0.0\n",
    ]
    .iter()
    .map(|body| format!("{head}{body}"))
    .collect()
}

/// Generated files: each combination of comments above a block, a blank line, comments above
/// and after each of two lines in a block or at the top level.
fn generated() -> Vec<String> {
    let above = ["", "// Above.\n", "// Above.\n\n", "// A1.\n// A2.\n"];
    let own = ["", "\t// Own.\n", "\t// Own.\n\n", "\n"];
    let suffix = ["", " // Suffix."];
    let mut out = Vec::new();
    for a in above {
        for o1 in own {
            for o2 in own {
                for s1 in suffix {
                    out.push(format!(
                        "module example.com/m\n\n{a}retract (\n{o1}\tv1.0.0{s1}\n{o2}\t[v1.1.0, v1.2.0]\n)\n"
                    ));
                }
            }
        }
        for s in suffix {
            out.push(format!("module example.com/m\n\n{a}retract v1.0.0{s}\n"));
        }
    }
    out
}

#[test]
fn retractions_match_go_mod_edit_json() {
    if modgate_testkit::require_go().is_none() {
        return;
    }
    let env = GoEnv::new("off");
    let mut refused = 0;
    let cases: Vec<String> = written().into_iter().chain(generated()).collect();
    assert!(cases.len() > 100, "{}", cases.len());
    for (n, gomod) in cases.iter().enumerate() {
        let want = go_retractions(&env, n, gomod);
        let got = ours(gomod);
        match (&want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(g, w, "go.mod:\n{gomod}"),
            (Err(_), Err(_)) => refused += 1,
            _ => panic!("go: {want:?}\nours: {got:?}\ngo.mod:\n{gomod}"),
        }
    }
    // The syntax-error cases were refused by both, and nothing else was.
    assert_eq!(refused, 4);
}
