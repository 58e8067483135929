//! Where the time goes, before and after: writes the per-stage table of two load-benchmark
//! runs (`rl_benches::compare_runs`), e.g. a committed run against a new one.

use std::path::PathBuf;
use std::process::ExitCode;

use rl_benches::compare_runs::{parse, render};

const USAGE: &str = "\
compare_runs: two load-benchmark runs side by side, per stage (phase a)

  --before FILE   results.json of the earlier run
  --after FILE    results.json of the later run
  --conns N       the connection count compared (default 100)
  --title TEXT    the heading of the file written
  --out FILE      the markdown file to write
";

struct Options {
    before: PathBuf,
    after: PathBuf,
    conns: u64,
    title: String,
    out: PathBuf,
}

fn options() -> Result<Option<Options>, String> {
    let (mut before, mut after, mut out) = (None, None, None);
    let mut conns = 100;
    let mut title = "Where the time goes, before and after".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--before" => before = Some(PathBuf::from(value)),
            "--after" => after = Some(PathBuf::from(value)),
            "--out" => out = Some(PathBuf::from(value)),
            "--title" => title = value,
            "--conns" => {
                conns = value
                    .parse()
                    .map_err(|_| format!("--conns {value}: not a number"))?
            }
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    Ok(Some(Options {
        before: before.ok_or("--before is required")?,
        after: after.ok_or("--after is required")?,
        conns,
        title,
        out: out.ok_or("--out is required")?,
    }))
}

fn run(o: &Options) -> Result<(), String> {
    let read = |path: &PathBuf| {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        parse(&text, o.conns).map_err(|e| format!("{}: {e}", path.display()))
    };
    let (before, after) = (read(&o.before)?, read(&o.after)?);
    let text = format!("# {}\n\n{}", o.title, render(&before, &after, o.conns));
    std::fs::write(&o.out, text).map_err(|e| format!("{}: {e}", o.out.display()))
}

fn main() -> ExitCode {
    match options() {
        Ok(None) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Some(o)) => match run(&o) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("compare_runs: {err}");
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("compare_runs: {err}\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}
