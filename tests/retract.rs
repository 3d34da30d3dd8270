//! The `retract` parser of modgate-protocol against the real `go`, twice:
//! * for every `go.mod` below (written by hand for each form, and generated over the places a
//!   rationale comment can be), `go mod edit -json` (Go 1.23's strict `modfile.Parse`) and
//!   `parse_retractions` give the same Low/High/Rationale list and refuse the same syntax
//!   errors;
//! * for a module served by a fixture GOPROXY whose latest `go.mod` uses the lax forms `go`
//!   accepts from a dependency, `go list -m -json -retracted` and `Retraction::contains` /
//!   `Retractions::is_retracted` agree on every version and its rationales.
//!
//! It lives here, not beside the parser, because modgate-protocol cannot depend on the testkit
//! (which depends on it).

use modgate_protocol::{parse_retractions, Retraction, Retractions};
use modgate_testkit::{FixtureProxy, GoEnv, ModuleVersion};

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

/// The latest `go.mod` of the module below: lax forms `go mod edit` refuses but `go` applies
/// to a dependency (malformed directives skipped, extra tokens ignored, other directives and
/// block kinds passed over), and rationales in every place.
const LAX_GO_MOD: &str = "module example.com/retracting

go 1.21

// Reason A.
retract v1.0.1
retract [v1.0.2, v1.0.4] // Range B.
retract v1.0.5 v1.0.6 // Extra tokens: only the first version.
retract [v1.0.7
retract `v1.0.8`
retract \"v1.0.9\" // Quoted.
retract v1.1 // Shorthand.
retract (
\t// In block.
\tv1.2.0
\tv1.3.0 // Own.
\t( v1.7.0 )
)
// Block reason,
// two lines.
retract (
\tv1.4.0
\t[v1.5.0, v1.5.0]
)
exclude example.com/x v1.0.0
replace example.com/x => ./x
retract v1.6.0
retract v1.6.0 // Second rationale.
retract [v1.6.0, v1.6.9] // Third.
retract foo (
\tv1.0.0
)
";

/// `go list -m -json -retracted` lists, for each version, the rationales of every retraction
/// of the latest `go.mod` that covers it (or "retracted by module author"): the same as
/// `parse_retractions` and `Retraction::contains` give for a dependency's `go.mod`.
#[tokio::test(flavor = "multi_thread")]
async fn retracted_versions_match_go_list_retracted() {
    const M: &str = "example.com/retracting";
    if modgate_testkit::require_go().is_none() {
        return;
    }
    let versions = [
        "v1.0.0", "v1.0.1", "v1.0.2", "v1.0.3", "v1.0.4", "v1.0.5", "v1.0.6", "v1.0.7", "v1.0.8",
        "v1.0.9", "v1.1.0", "v1.1.1", "v1.2.0", "v1.3.0", "v1.4.0", "v1.5.0", "v1.6.0", "v1.6.5",
        "v1.7.0", "v1.9.9",
    ];
    let modules: Vec<ModuleVersion> = versions
        .iter()
        .map(|v| ModuleVersion::new(M, v).expect("module"))
        .collect();
    let fixture = FixtureProxy::start(&modules).await.expect("fixture");
    fixture.set_file(
        &format!("/{M}/@v/v1.9.9.mod"),
        LAX_GO_MOD.as_bytes().to_vec(),
    );
    let env = GoEnv::new(&fixture.url());
    env.write_main_module(&[]);
    let args: Vec<String> = versions.iter().map(|v| format!("{M}@{v}")).collect();
    let mut cmd = vec!["list", "-m", "-json", "-retracted"];
    cmd.extend(args.iter().map(String::as_str));
    let run = env.go(&cmd);
    run.expect_ok("go list -m -json -retracted");
    let stdout = run.stdout();
    let listed: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("go list JSON");
    assert_eq!(listed.len(), versions.len(), "{stdout}");

    let ours = Retractions::parse(LAX_GO_MOD).expect("parse");
    let mut retracted = 0;
    for entry in &listed {
        let version = entry["Version"].as_str().expect("Version");
        let want: Vec<String> = entry["Retracted"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let covering: Vec<&Retraction> = ours.0.iter().filter(|r| r.contains(version)).collect();
        let mut got: Vec<String> = covering
            .iter()
            .filter(|r| !r.rationale.is_empty())
            .map(|r| r.rationale.clone())
            .collect();
        if got.is_empty() && !covering.is_empty() {
            got.push("retracted by module author".to_owned());
        }
        assert_eq!(got, want, "{M}@{version}");
        // is_retracted agrees: some retraction iff go says retracted, with go's first reason.
        match ours.is_retracted(version) {
            None => assert!(want.is_empty(), "{version}"),
            Some(r) if r.rationale.is_empty() => {
                assert_eq!(want, ["retracted by module author"], "{version}")
            }
            Some(r) => assert_eq!(r.rationale, want[0], "{version}"),
        }
        retracted += usize::from(!want.is_empty());
    }
    // The fixture means something: most versions are retracted, some not.
    assert_eq!(retracted, 13, "{stdout}");
}
