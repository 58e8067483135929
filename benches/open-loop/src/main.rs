//! The load benchmark's open-loop generator (`rl_open_loop`): requests at a fixed rate,
//! latency from each request's scheduled time, one `LOADBENCH` JSON line on stdout.

use std::process::ExitCode;

use rl_open_loop::{Args, HttpTarget, Schedule, Settings, USAGE, run};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match generate(argv) {
        Ok(line) => {
            println!("LOADBENCH {line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("open_loop: {err}\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn generate(argv: Vec<String>) -> Result<String, String> {
    let args = Args::parse(argv)?;
    let keys =
        std::fs::read_to_string(&args.keys).map_err(|e| format!("{}: {e}", args.keys.display()))?;
    let keys: Vec<String> = keys.lines().map(str::to_string).collect();
    let target = HttpTarget::new(&args.url, &args.header, keys)?;
    let schedule = Schedule::new(args.rate, args.duration)?;
    let settings = Settings {
        connections: args.connections,
        timeout: args.timeout,
    };
    // One thread: the generator shares the machine with what it measures.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime.block_on(run(target, schedule, settings));
    Ok(report.to_json().to_string())
}
