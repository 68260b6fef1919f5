//! The example app's server: syncgen's reference server for `Project`, `Task` and
//! `Comment`, on a SQLite file by default or PostgreSQL by URL.
//!
//! ```text
//! cargo run -p tasks --bin tasks-server -- --listen 127.0.0.1:8080 --token dev-token=dev
//! cargo run -p tasks --bin tasks-server -- --postgres postgres://postgres@127.0.0.1/test
//! TASKS_JWT_SECRET=... cargo run -p tasks --bin tasks-server -- --jwt-secret-env TASKS_JWT_SECRET
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use sync_server::{JwtVerifier, Server, StaticTokens};
use tasks::model::{Comment, Project, Task};

/// Serves the tasks model over HTTP.
#[derive(Parser)]
#[command(name = "tasks-server", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// SQLite database file (used unless --postgres is given).
    #[arg(long, default_value = "tasks-server.db")]
    db: PathBuf,
    /// PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test.
    #[arg(long)]
    postgres: Option<String>,
    /// A bearer token and the account it acts for, as TOKEN=ACCOUNT (repeatable).
    #[arg(long = "token", default_value = "dev-token=dev")]
    tokens: Vec<String>,
    /// Take JSON Web Tokens (HS256) instead of fixed tokens: the name of the environment
    /// variable that holds the shared secret. The principal is the token's `sub`.
    #[arg(long = "jwt-secret-env", value_name = "VAR")]
    jwt_secret_env: Option<String>,
    /// With --jwt-secret-env: the issuer (`iss`) tokens must name.
    #[arg(long = "jwt-issuer", requires = "jwt_secret_env")]
    jwt_issuer: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut pairs = Vec::new();
    for t in &args.tokens {
        let (token, account) = t
            .split_once('=')
            .ok_or_else(|| format!("--token `{t}`: expected TOKEN=ACCOUNT"))?;
        pairs.push((token.to_string(), account.to_string()));
    }
    let builder = Server::builder()
        .entity::<Project>()
        .entity::<Task>()
        .entity::<Comment>();
    let builder = match &args.jwt_secret_env {
        Some(var) => {
            let secret = std::env::var(var).map_err(|_| {
                format!("--jwt-secret-env {var}: the environment variable `{var}` is not set; export the identity provider's HS256 secret in it")
            })?;
            let mut verifier = JwtVerifier::hs256(secret.as_bytes());
            if let Some(iss) = &args.jwt_issuer {
                verifier = verifier.issuer(iss);
            }
            builder.token_verifier(verifier)
        }
        None => builder.token_verifier(StaticTokens::new(pairs)),
    };
    let server = match &args.postgres {
        Some(url) => {
            builder
                .connect_postgres(url, tasks::server_postgres_migrations()?)
                .await?
        }
        None => {
            builder
                .open_sqlite(&args.db, tasks::server_sqlite_migrations()?)
                .await?
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "tasks-server listening on http://{} (model {})",
        listener.local_addr()?,
        server.fingerprint()
    );
    axum::serve(listener, server.router()).await?;
    Ok(())
}
