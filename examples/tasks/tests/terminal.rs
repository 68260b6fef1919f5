//! A terminal session in a pty: a task added offline on device A is synced and seen on
//! device B, through the `tasks` client typed at a shell prompt.

use sync_server::{Server, StaticTokens};
use tasks::model::{Comment, Project, Task};

/// Starts the server on a free port in a background thread and returns its URL.
fn start_server(dir: &std::path::Path) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let db = dir.join("server.db");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let server = Server::builder()
                .entity::<Project>()
                .entity::<Task>()
                .entity::<Comment>()
                .token_verifier(StaticTokens::new([("pty-token", "pty-account")]))
                .open_sqlite(db, tasks::server_sqlite_migrations().expect("migrations"))
                .await
                .expect("server");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(format!("http://{}", listener.local_addr().expect("addr")))
                .expect("send");
            axum::serve(listener, server.router()).await.expect("serve");
        });
    });
    rx.recv().expect("server url")
}

#[test]
fn a_task_added_offline_on_a_is_seen_on_b() -> Result<(), rexpect::error::Error> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = start_server(dir.path());
    let bin = env!("CARGO_BIN_EXE_tasks");
    let dev = |name: &str, server: &str| {
        format!(
            "{bin} --db {} --server {server} --token pty-token --account pty-account",
            dir.path().join(format!("{name}.db")).display()
        )
    };
    let mut sh = rexpect::spawn_bash(Some(30_000))?;
    // Offline: no server listens on this port.
    sh.send_line(&format!(
        "{} add 'Buy milk' --price 199",
        dev("a", "http://127.0.0.1:9")
    ))?;
    sh.exp_string("added")?;
    sh.wait_for_prompt()?;
    sh.send_line(&format!("{} sync", dev("a", "http://127.0.0.1:9")))?;
    sh.exp_string("paused: Offline")?;
    sh.wait_for_prompt()?;
    sh.send_line(&format!("{} status", dev("a", &url)))?;
    sh.exp_string("pending changes: 2")?;
    sh.wait_for_prompt()?;
    // Online.
    sh.send_line(&format!("{} sync", dev("a", &url)))?;
    sh.exp_string("synced: pushed 2")?;
    sh.wait_for_prompt()?;
    sh.send_line(&format!("{} sync", dev("b", &url)))?;
    sh.exp_string("pulled 2")?;
    sh.wait_for_prompt()?;
    sh.send_line(&format!("{} list", dev("b", &url)))?;
    sh.exp_regex("open +Buy milk +likes=0 price=199")?;
    sh.wait_for_prompt()?;
    sh.send_line("exit")?;
    Ok(())
}

/// Issue "The app developer's side": `tasks watch` on device B (a live query, syncing in
/// the background) shows a task device A adds and syncs, within one background sync.
#[test]
fn a_live_list_on_b_shows_what_a_syncs() -> Result<(), rexpect::error::Error> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = start_server(dir.path());
    let bin = env!("CARGO_BIN_EXE_tasks");
    let dev = |name: &str| {
        format!(
            "{bin} --db {} --server {url} --token pty-token --account pty-account",
            dir.path().join(format!("{name}.db")).display()
        )
    };
    let mut watch = rexpect::spawn(&format!("{} watch --every 1", dev("b")), Some(30_000))?;
    watch.exp_string("--- 0 tasks")?;
    let mut sh = rexpect::spawn_bash(Some(30_000))?;
    sh.send_line(&format!("{} add 'Water the plants' --price 5", dev("a")))?;
    sh.exp_string("added")?;
    sh.wait_for_prompt()?;
    sh.send_line(&format!("{} sync", dev("a")))?;
    sh.exp_string("synced: pushed 2")?;
    sh.wait_for_prompt()?;
    watch.exp_string("--- 1 tasks")?;
    watch.exp_regex("open +Water the plants +likes=0 price=5")?;
    sh.send_line("exit")?;
    watch.send_control('c')?;
    Ok(())
}
