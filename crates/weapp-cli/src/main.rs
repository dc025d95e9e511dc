//! The `weapp` command: run the WeChat simulator, fetch and share access tokens, decrypt open
//! data. Thin by design: parse arguments, set up logging, run a subcommand, turn its error into
//! one line on stderr and a non-zero exit.

mod commands;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: a login allocates and frees a few hundred small
/// buffers, and glibc's `malloc`/`free` were a tenth of the server's CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// weapp — the server side of WeChat Mini Programs.
#[derive(Debug, Parser)]
#[command(name = "weapp", version, about, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `weapp=debug`); logs go to stderr.
    #[arg(long, global = true, env = "WEAPP_LOG", default_value = "info")]
    log: String,
    /// Log line format: `text` (default; coloured only on a terminal) or `json` (one object a
    /// line). `weapp serve` also reads `log_format` from its configuration file.
    #[arg(long, global = true, env = "WEAPP_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the local WeChat API simulator and print its base URL.
    Sim(commands::sim::Args),
    /// Fetch (or read the shared) access token of an app and print it.
    Token(commands::token::Args),
    /// Decrypt a mini program `encryptedData` blob and print the JSON.
    Decrypt(commands::decrypt::Args),
    /// Run the login/session service and token broker (`--sandbox`: against a built-in simulator).
    Serve(commands::serve::Args),
    /// Run the whole login journey in-process against the sandbox and print each step.
    Demo(commands::demo::Args),
    /// Verify, decrypt or build WeChat message-push payloads.
    Push(commands::push::Args),
    /// Call any WeChat API with the access token handled (like `gh api`).
    Api(commands::api::Args),
    /// Make a mini program code image.
    Qrcode(commands::qrcode::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One-shot commands stay quiet unless asked; the long-running ones log at `--log`.
    let quiet = matches!(
        cli.command,
        Command::Token(_)
            | Command::Decrypt(_)
            | Command::Demo(_)
            | Command::Push(_)
            | Command::Api(_)
            | Command::Qrcode(_)
    );
    let filter = if quiet && cli.log == "info" {
        "warn"
    } else {
        cli.log.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The flag (or its variable) wins; `weapp serve` falls back to its file's `log_format`
    // (a file that does not load logs as text, and its error is reported as usual).
    let json = match (&cli.log_format, &cli.command) {
        (Some(f), _) => f == "json",
        (None, Command::Serve(args)) => args.log_format() == weapp_server::config::LogFormat::Json,
        (None, _) => false,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        // Colour escapes only for a person at a terminal: a file or a pipe gets plain text.
        use std::io::IsTerminal;
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weapp: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sim(args) => commands::sim::run(args).await,
            Command::Token(args) => commands::token::run(args).await,
            Command::Decrypt(args) => commands::decrypt::run(args),
            Command::Serve(args) => commands::serve::run(args).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Push(args) => commands::push::run(args),
            Command::Api(args) => commands::api::run(args).await,
            Command::Qrcode(args) => commands::qrcode::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("weapp: error: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `weapp serve` warns about `WEAPP_*` variables nothing reads: every variable of this
    /// command's flags must be known to it.
    #[test]
    fn every_environment_variable_of_the_command_is_known_to_serve() {
        fn walk(c: &clap::Command, names: &mut Vec<String>) {
            for arg in c.get_arguments() {
                if let Some(env) = arg.get_env() {
                    names.push(env.to_string_lossy().into_owned());
                }
            }
            for sub in c.get_subcommands() {
                walk(sub, names);
            }
        }
        let mut names = Vec::new();
        walk(&super::Cli::command(), &mut names);
        assert!(names.iter().any(|n| n == "WEAPP_SECRET"), "{names:?}");
        let unknown =
            weapp_server::config::unknown_env_vars(names.iter().map(std::ffi::OsString::from));
        assert!(unknown.is_empty(), "{unknown:?}");
    }
}
