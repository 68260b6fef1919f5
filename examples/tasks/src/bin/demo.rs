//! A scripted demo: a server on a free port of 127.0.0.1, two devices that edit the same
//! task offline, the automatic merges, one manual conflict, its resolution, and the
//! converged state. Needs nothing but the Rust toolchain:
//!
//! ```text
//! cargo run -p tasks --bin demo
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use sync_runtime::engine::{EngineConfig, HttpTransport, SyncEngine, SyncOutcome};
use sync_runtime::prelude::*;
use sync_server::{Server, StaticTokens};
use tasks::model::{Comment, Project, Task};

type Device = SyncEngine<HttpTransport>;

fn open_device(
    dir: &std::path::Path,
    name: &str,
    url: &str,
) -> Result<Device, Box<dyn std::error::Error>> {
    let store = tasks::open_store(dir.join(format!("{name}.db")))?;
    let transport = HttpTransport::new(url)?.fingerprint(store.fingerprint());
    Ok(SyncEngine::new(
        store,
        transport,
        EngineConfig::new("demo-account", "demo-token"),
    ))
}

async fn sync(name: &str, d: &Device) -> Result<(), Box<dyn std::error::Error>> {
    match d.sync_now().await? {
        SyncOutcome::Ran(r) => {
            let mut parts = vec![format!("pushed {}", r.applied + r.merged + r.conflicted)];
            if r.merged > 0 {
                parts.push(format!("auto-merged {}", r.merged));
            }
            if r.conflicted > 0 {
                parts.push(format!("{} conflict(s)", r.conflicted));
            }
            parts.push(format!("pulled {}", r.pulled));
            if let Some(p) = r.paused {
                parts.push(format!("paused: {p:?}"));
            }
            println!("  [{name}] sync: {}", parts.join(", "));
        }
        SyncOutcome::AlreadyRunning => println!("  [{name}] sync already running"),
    }
    Ok(())
}

fn show(name: &str, t: &Task) {
    let tags: Vec<&str> = t.tags.iter().map(String::as_str).collect();
    println!(
        "  [{name}] title={:?} status={:?} likes={} tags={:?} price_cents={}",
        t.title, t.status, t.likes, tags, t.price_cents
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile_dir()?;
    let server = Server::builder()
        .entity::<Project>()
        .entity::<Task>()
        .entity::<Comment>()
        .token_verifier(StaticTokens::new([("demo-token", "demo-account")]))
        .open_sqlite(dir.join("server.db"), tasks::server_sqlite_migrations()?)
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let router = server.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    println!("server listening on {url}");

    let a = Arc::new(open_device(&dir, "phone", &url)?);
    let b = Arc::new(open_device(&dir, "laptop", &url)?);

    println!("\n1. The phone creates a project and a task; both devices sync.");
    let project = Project {
        id: Uuid::now_v7(),
        name: "Home".into(),
        created_at: Utc::now(),
    };
    let task = Task {
        id: Uuid::now_v7(),
        project_id: project.id,
        title: "Buy milk".into(),
        status: "open".into(),
        tags: BTreeSet::from(["shopping".to_string()]),
        likes: 0,
        price_cents: 199,
        due: None,
        meta: Default::default(),
        r#type: None,
        draft: None,
    };
    a.store().create(&project)?;
    a.store().create(&task)?;
    sync("phone", &a).await?;
    sync("laptop", &b).await?;
    show(
        "laptop",
        &b.store()
            .get::<Task>(task.id)?
            .ok_or("the laptop has the task")?,
    );

    println!("\n2. Both devices edit the task offline.");
    let mut on_phone = a.store().get::<Task>(task.id)?.ok_or("task")?;
    on_phone.title = "Buy oat milk".into();
    on_phone.likes += 1;
    on_phone.tags.insert("weekend".into());
    on_phone.price_cents = 249;
    a.store().update(&on_phone)?;
    show("phone", &on_phone);
    let mut on_laptop = b.store().get::<Task>(task.id)?.ok_or("task")?;
    on_laptop.status = "doing".into();
    on_laptop.likes += 2;
    on_laptop.tags.remove("shopping");
    on_laptop.tags.insert("urgent".into());
    on_laptop.price_cents = 229;
    b.store().update(&on_laptop)?;
    show("laptop", &on_laptop);

    println!("\n3. They come back online and sync.");
    sync("phone", &a).await?;
    sync("laptop", &b).await?;
    let merged = b.store().get::<Task>(task.id)?.ok_or("task")?;
    show("laptop", &merged);
    println!("  title (lww): the phone's edit; status (lww): the laptop's edit");
    println!(
        "  likes (sum): 1 + 2 = {}; tags (union): both edits kept",
        merged.likes
    );
    for c in b.store().conflicts()? {
        for f in &c.fields {
            println!(
                "  conflict on `{}` (manual): base {}, laptop {}, server {}",
                f.field, f.base, f.local, f.remote
            );
        }
    }

    println!("\n4. The user resolves the conflict on the laptop: 239 cents.");
    b.store().resolve_with(&Task {
        price_cents: 239,
        ..merged
    })?;
    sync("laptop", &b).await?;
    sync("phone", &a).await?;

    println!("\n5. Converged state:");
    let (pa, pb) = (
        a.store().get::<Task>(task.id)?.ok_or("task")?,
        b.store().get::<Task>(task.id)?.ok_or("task")?,
    );
    show("phone", &pa);
    show("laptop", &pb);
    let converged =
        pa == pb && a.store().status()?.pending == 0 && b.store().status()?.pending == 0;
    println!("converged: {}", if converged { "yes" } else { "NO" });
    std::fs::remove_dir_all(&dir).ok();
    if !converged {
        std::process::exit(1);
    }
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("syncgen-demo-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
