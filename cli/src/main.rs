//! The `floe` command-line tool.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`floe sim ... | head`) instead of failing on a broken pipe. Not the server: there a
    // client that resets its connection must only end its own request (writes then fail
    // with EPIPE, which Rust's default of ignoring SIGPIPE turns into an error).
    #[cfg(unix)]
    if !args.is_server() {
        // SAFETY: called in main before any thread exists; SIG_DFL is a valid handler.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line, then the cause chain.
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
