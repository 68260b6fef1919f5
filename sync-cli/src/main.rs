//! The `sync-cli` binary: a thin clap front end over the `sync_cli` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Generates SQL migrations from #[derive(Syncable)] structs.
#[derive(Parser)]
#[command(name = "sync-cli", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the next migration for every database, and sync-schema.json.
    Generate {
        /// Rust source files or folders holding the Syncable structs.
        #[arg(long, short, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// The output folder.
        #[arg(long, short)]
        out: PathBuf,
        /// Write nothing; exit 1 with a diff if the output is stale.
        #[arg(long)]
        check: bool,
        /// Allow migrations that drop entities or fields.
        #[arg(long)]
        allow_destructive: bool,
    },
    /// Print each entity's fields, types, merge strategies and columns.
    Inspect {
        /// Rust source files or folders holding the Syncable structs.
        #[arg(long, short, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate {
            input,
            out,
            check,
            allow_destructive,
        } => sync_cli::generate(&sync_cli::Options {
            inputs: input,
            out_dir: out.clone(),
            allow_destructive,
            check,
        })
        .map(|report| match (&report.migration, check) {
            (Some(m), false) => {
                println!(
                    "wrote migration {:04} `{}` to {}",
                    m.version,
                    m.name,
                    out.display()
                );
                for c in &report.changes {
                    println!("  {c}");
                }
            }
            (None, false) if report.written.is_empty() => {
                println!("the model has not changed; nothing to write")
            }
            (None, false) => println!(
                "the model has not changed; refreshed {} generated file(s) in {}",
                report.written.len(),
                out.display()
            ),
            (_, true) => println!("{} is up to date", out.display()),
        }),
        Command::Inspect { input } => {
            sync_cli::load(&input).map(|l| print!("{}", sync_cli::inspect(&l.model)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
