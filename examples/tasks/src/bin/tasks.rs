//! The example app's terminal client: one device with its own local SQLite file.
//!
//! ```text
//! tasks --db phone.db add "Buy milk"            # works offline
//! tasks --db phone.db list
//! tasks --db phone.db edit 0190ab --like --tag weekend --price 249
//! tasks --db phone.db sync --server http://127.0.0.1:8080
//! tasks --db phone.db status
//! tasks --db phone.db conflicts
//! tasks --db phone.db resolve 0190ab --keep-local
//! tasks --db phone.db watch --every 2            # live list, synced in the background
//! ```

use std::time::Duration;

use clap::{Parser, Subcommand};
use sync_runtime::engine::{EngineConfig, HttpTransport, SyncEngine, SyncOutcome, Triggers};
use sync_runtime::prelude::*;
use sync_runtime::store::{LocalStore, Query};
use tasks::model::{Project, Task};

/// A device of the tasks app.
#[derive(Parser)]
#[command(name = "tasks", version, about)]
struct Args {
    /// This device's database file.
    #[arg(long, default_value = "tasks.db", global = true)]
    db: std::path::PathBuf,
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// The bearer token.
    #[arg(long, default_value = "dev-token", global = true)]
    token: String,
    /// The account the token acts for.
    #[arg(long, default_value = "dev", global = true)]
    account: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add a task (offline is fine).
    Add {
        /// What to do.
        title: String,
        /// The project (created if new).
        #[arg(long, default_value = "Inbox")]
        project: String,
        /// Price in cents.
        #[arg(long, default_value_t = 0)]
        price: i64,
    },
    /// List the tasks.
    List,
    /// Edit a task (by id prefix).
    Edit {
        /// The task's id, or the start of it.
        id: String,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        /// New status (open, doing, done).
        #[arg(long)]
        status: Option<String>,
        /// Add a like.
        #[arg(long)]
        like: bool,
        /// Add a tag.
        #[arg(long)]
        tag: Vec<String>,
        /// Remove a tag.
        #[arg(long)]
        untag: Vec<String>,
        /// New price in cents.
        #[arg(long)]
        price: Option<i64>,
    },
    /// Delete a task.
    Delete {
        /// The task's id, or the start of it.
        id: String,
    },
    /// Push local changes and pull the server's.
    Sync,
    /// Show the task list live, syncing in the background, until interrupted.
    Watch {
        /// Seconds between background syncs.
        #[arg(long, default_value_t = 2)]
        every: u64,
    },
    /// Pending changes, last sync, failed items, conflicts.
    Status,
    /// Unresolved conflicts.
    Conflicts,
    /// Resolve a conflict.
    Resolve {
        /// The task's id, or the start of it.
        id: String,
        /// Keep this device's values.
        #[arg(long, conflicts_with_all = ["keep_server", "price"])]
        keep_local: bool,
        /// Take the server's values.
        #[arg(long, conflicts_with = "price")]
        keep_server: bool,
        /// Set the price to this value.
        #[arg(long)]
        price: Option<i64>,
    },
}

fn open(args: &Args) -> Result<LocalStore, Box<dyn std::error::Error>> {
    Ok(tasks::open_store(&args.db)?)
}

fn find(store: &LocalStore, prefix: &str) -> Result<Task, Box<dyn std::error::Error>> {
    let matches: Vec<Task> = store
        .list::<Task>()?
        .into_iter()
        .filter(|t| t.id.to_string().starts_with(prefix))
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one")),
        0 => Err(format!("no task with an id starting with `{prefix}`; see `tasks list`").into()),
        n => Err(format!("{n} tasks start with `{prefix}`; give more of the id").into()),
    }
}

fn print_task(t: &Task) {
    let tags: Vec<&str> = t.tags.iter().map(String::as_str).collect();
    println!(
        "{}  {:<6} {:<30} likes={} price={} tags=[{}]",
        &t.id.to_string()[..13],
        t.status,
        t.title,
        t.likes,
        t.price_cents,
        tags.join(",")
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let store = open(&args)?;
    match &args.command {
        Command::Add {
            title,
            project,
            price,
        } => {
            let p = match store
                .query::<Project>(&Query::new().eq("name", project).limit(1))?
                .pop()
            {
                Some(p) => p,
                None => {
                    let p = Project {
                        id: Uuid::now_v7(),
                        name: project.clone(),
                        created_at: Utc::now(),
                    };
                    store.create(&p)?;
                    p
                }
            };
            let t = Task {
                id: Uuid::now_v7(),
                project_id: p.id,
                title: title.clone(),
                status: "open".into(),
                tags: Default::default(),
                likes: 0,
                price_cents: *price,
                due: None,
                meta: Default::default(),
                r#type: None,
                draft: None,
            };
            store.create(&t)?;
            print!("added ");
            print_task(&t);
        }
        Command::List => {
            let tasks = store.query::<Task>(&Query::new().order_by("title"))?;
            if tasks.is_empty() {
                println!("no tasks");
            }
            for t in &tasks {
                print_task(t);
            }
        }
        Command::Edit {
            id,
            title,
            status,
            like,
            tag,
            untag,
            price,
        } => {
            let mut t = find(&store, id)?;
            if let Some(v) = title {
                t.title = v.clone();
            }
            if let Some(v) = status {
                t.status = v.clone();
            }
            if *like {
                t.likes += 1;
            }
            t.tags.extend(tag.iter().cloned());
            for u in untag {
                t.tags.remove(u);
            }
            if let Some(v) = price {
                t.price_cents = *v;
            }
            store.update(&t)?;
            print!("edited ");
            print_task(&t);
        }
        Command::Delete { id } => {
            let t = find(&store, id)?;
            store.delete::<Task>(t.id)?;
            println!("deleted {}", t.id);
        }
        Command::Sync => {
            let transport = HttpTransport::new(&args.server)?.fingerprint(store.fingerprint());
            let engine = SyncEngine::new(
                store.clone(),
                transport,
                EngineConfig::new(&args.account, &args.token),
            );
            // A progress bar fed by the sync status (drawn only on a terminal): a
            // snapshot's pulled and expected records, else a spinner.
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar.set_message("syncing");
            let statuses = store.watch_status();
            let shown = bar.clone();
            std::thread::spawn(move || {
                while let Some(s) = statuses.recv() {
                    let Some(p) = s.progress else { continue };
                    if let Some(total) = p.expected {
                        shown.set_style(
                            indicatif::ProgressStyle::with_template(
                                "{bar:30} {pos}/{len} records {msg}",
                            )
                            .expect("valid template"),
                        );
                        shown.set_length(total.max(p.pulled));
                        shown.set_position(p.pulled);
                    } else {
                        shown.set_message(format!("syncing: {} records pulled", p.pulled));
                    }
                }
            });
            let outcome = engine.sync_now().await?;
            bar.finish_and_clear();
            match outcome {
                SyncOutcome::Ran(r) => {
                    println!(
                        "synced: pushed {}, merged {}, conflicts {}, rejected {}, pulled {}",
                        r.applied, r.merged, r.conflicted, r.dead, r.pulled
                    );
                    if let Some(p) = r.paused {
                        println!("paused: {p:?} (your changes are kept and will be sent later)");
                    }
                }
                SyncOutcome::AlreadyRunning => println!("a sync is already running"),
            }
        }
        Command::Watch { every } => {
            let transport = HttpTransport::new(&args.server)?.fingerprint(store.fingerprint());
            let engine = std::sync::Arc::new(SyncEngine::new(
                store.clone(),
                transport,
                EngineConfig::new(&args.account, &args.token),
            ));
            let _background = engine.start(Triggers {
                interval: Duration::from_secs((*every).max(1)),
                ..Triggers::default()
            });
            // The live query: the list now, then again after each commit that changed
            // it (an edit here, or a change another device made, once pulled).
            let mut live = store.watch_stream::<Task>(Query::new().order_by("title"))?;
            loop {
                let next = std::future::poll_fn(|cx| {
                    futures_core::Stream::poll_next(std::pin::Pin::new(&mut live), cx)
                })
                .await;
                let Some(tasks) = next else { break };
                let tasks = tasks?;
                println!("--- {} tasks", tasks.len());
                for t in &tasks {
                    print_task(t);
                }
            }
        }
        Command::Status => {
            let s = store.status()?;
            println!("pending changes: {}", s.pending);
            println!(
                "last sync: {}",
                s.last_sync_at
                    .map_or_else(|| "never".to_string(), sync_runtime::time::format)
            );
            for f in &s.failed {
                println!(
                    "failed: {} {} (attempt {}): {}",
                    f.entity_type,
                    f.entity_id,
                    f.attempt_count,
                    f.last_error.as_deref().unwrap_or("")
                );
            }
            for d in &s.dead {
                println!(
                    "dead: {} {}: {}",
                    d.entity_type,
                    d.entity_id,
                    d.last_error.as_deref().unwrap_or("")
                );
            }
            for (e, id) in &s.conflicted {
                println!("conflicted: {e} {id} (see `tasks conflicts`)");
            }
        }
        Command::Conflicts => {
            let conflicts = store.conflicts()?;
            if conflicts.is_empty() {
                println!("no conflicts");
            }
            for c in conflicts {
                for f in c.fields {
                    println!(
                        "{} {}: `{}` base {} / this device {} / server {}",
                        c.entity, c.id, f.field, f.base, f.local, f.remote
                    );
                }
            }
        }
        Command::Resolve {
            id,
            keep_local,
            keep_server,
            price,
        } => {
            let t = find(&store, id)?;
            if *keep_local {
                store.keep_local::<Task>(t.id)?;
            } else if *keep_server {
                store.keep_server::<Task>(t.id)?;
            } else if let Some(p) = price {
                store.resolve_with(&Task {
                    price_cents: *p,
                    ..t.clone()
                })?;
            } else {
                return Err("say how to resolve: --keep-local, --keep-server or --price N".into());
            }
            println!("resolved {}; run `tasks sync` to send it", t.id);
        }
    }
    Ok(())
}
