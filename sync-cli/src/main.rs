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
        /// Write nothing; exit 1 naming the stale files if the output is stale (0 if fresh).
        #[arg(long)]
        check: bool,
        /// With --check: print each stale file's diff.
        #[arg(long, requires = "check")]
        diff: bool,
        /// Allow migrations that drop entities or fields.
        #[arg(long)]
        allow_destructive: bool,
        #[command(flatten)]
        api: ApiFlags,
    },
    /// Check a running server of the model against the protocol's rules (PROTOCOL.md).
    ///
    /// Use a test account: the checks create records with fresh ids in the token's
    /// account (about 70) and delete them at the end, which leaves their tombstones.
    Conformance {
        /// Rust source files or folders holding the Syncable structs the server serves.
        #[arg(long, short, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// The server's base URL, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        base_url: String,
        /// A bearer token of one account.
        #[arg(long)]
        token: String,
        /// A bearer token of another account (enables the isolation check).
        #[arg(long)]
        token_b: Option<String>,
        /// A change token the server has expired (enables the 410 check).
        #[arg(long)]
        expired_token: Option<String>,
        /// Print every request and response to standard error.
        #[arg(long)]
        trace: bool,
    },
    /// Print each entity's fields, types, merge strategies and columns.
    Inspect {
        /// Rust source files or folders holding the Syncable structs.
        #[arg(long, short, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
    },
}

/// The OpenAPI document's metadata. Each flag given replaces the value stored in
/// sync-schema.json; flags not given keep it.
#[derive(clap::Args)]
#[command(
    next_help_heading = "API metadata (stored in sync-schema.json; omitted flags keep the stored value)"
)]
struct ApiFlags {
    /// The document's title (default: "syncgen sync API").
    #[arg(long, value_name = "TEXT")]
    title: Option<String>,
    /// A server URL: absolute http(s) or a path such as /sync. Repeat for several;
    /// replaces the stored list (default: "/").
    #[arg(long = "server", value_name = "URL")]
    servers: Vec<String>,
    /// The API's licence as an SPDX expression, e.g. "MIT OR Apache-2.0" (replaces the
    /// stored licence, with --license-url if given).
    #[arg(long, value_name = "SPDX")]
    license: Option<String>,
    /// A URL of the licence text (instead of linking the SPDX identifier).
    #[arg(long, value_name = "URL", requires = "license")]
    license_url: Option<String>,
    /// The contact's name (person or team).
    #[arg(long, value_name = "TEXT")]
    contact_name: Option<String>,
    /// The contact's URL.
    #[arg(long, value_name = "URL")]
    contact_url: Option<String>,
    /// The contact's email address.
    #[arg(long, value_name = "ADDRESS")]
    contact_email: Option<String>,
}

impl ApiFlags {
    fn into_api(self) -> sync_cli::ApiInfo {
        use sync_cli::api_info::{ApiContact, ApiLicense, ApiServer};
        let contact = ApiContact {
            name: self.contact_name,
            url: self.contact_url,
            email: self.contact_email,
        };
        sync_cli::ApiInfo {
            title: self.title,
            servers: self
                .servers
                .into_iter()
                .map(|url| ApiServer {
                    url,
                    description: None,
                })
                .collect(),
            license: self.license.map(|name| ApiLicense {
                identifier: self.license_url.is_none().then(|| name.clone()),
                url: self.license_url,
                name,
            }),
            contact: (contact != ApiContact::default()).then_some(contact),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate {
            input,
            out,
            check,
            diff,
            allow_destructive,
            api,
        } => sync_cli::generate(&sync_cli::Options {
            inputs: input,
            out_dir: out.clone(),
            allow_destructive,
            check,
            diff,
            api: api.into_api(),
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
        Command::Conformance {
            input,
            base_url,
            token,
            token_b,
            expired_token,
            trace,
        } => match sync_cli::load(&input) {
            Ok(loaded) => {
                let report = sync_cli::conformance::run(
                    &loaded.model,
                    &sync_cli::conformance::Options {
                        base_url,
                        token,
                        token_b,
                        expired_token,
                        trace,
                    },
                );
                println!("{report}");
                return if report.failed() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                };
            }
            Err(e) => Err(e),
        },
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
