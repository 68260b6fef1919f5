//! Two server instances on one database (as behind a load balancer), 8 concurrent
//! pushers and 2 concurrent pullers for a few seconds: every pushed change is seen by
//! every puller exactly once, in token order. Nothing that decides correctness lives in
//! one server's memory.
#![allow(missing_docs)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use support::{Backend, Client, TestServer, project_create, task_create};
use uuid::Uuid;

async fn run(backend: Backend, seconds: u64) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let (_second, url2) = s.another_instance().await;
    let urls = [s.url.clone(), url2];
    let p = Uuid::now_v7();
    Client::new(&urls[0], "token-a")
        .push(vec![project_create(p, "P")])
        .await;

    let done = Arc::new(AtomicBool::new(false));
    let mut pushers = Vec::new();
    for i in 0..8 {
        let c = Client::new(&urls[i % 2], "token-a");
        pushers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let end = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < end {
                let batch: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
                let results = c
                    .push(batch.iter().map(|t| task_create(*t, p)).collect())
                    .await;
                assert!(results.iter().all(|r| r["status"] == "applied"));
                ids.extend(batch);
            }
            ids
        }));
    }
    let mut pullers = Vec::new();
    for i in 0..2 {
        let c = Client::new(&urls[i % 2], "token-a");
        let done = done.clone();
        pullers.push(tokio::spawn(async move {
            let mut token = "t1.0".to_string();
            let mut seen: Vec<String> = Vec::new();
            let mut last_seq = 0i64;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let (status, body) = c.get(&format!("/changes?since={token}&limit=50")).await;
                assert_eq!(status, 200, "{body:#}");
                for ch in body["changes"].as_array().unwrap() {
                    seen.push(ch["entity_id"].as_str().unwrap().to_string());
                }
                let next = body["next_token"].as_str().unwrap().to_string();
                let seq: i64 = next.split('.').nth(1).unwrap().parse().unwrap();
                assert!(seq >= last_seq, "tokens never go back");
                last_seq = seq;
                token = next;
                if finished && !body["has_more"].as_bool().unwrap() {
                    return seen;
                }
                if !body["has_more"].as_bool().unwrap() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    let mut pushed: BTreeSet<String> = BTreeSet::new();
    for h in pushers {
        pushed.extend(h.await.unwrap().into_iter().map(|u| u.to_string()));
    }
    done.store(true, Ordering::SeqCst);
    pushed.insert(p.to_string());
    for h in pullers {
        let seen = h.await.unwrap();
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "a change seen twice");
        let missing: Vec<&String> = pushed.difference(&unique).take(5).collect();
        assert!(
            missing.is_empty(),
            "{} changes never seen, e.g. {missing:?}",
            pushed.len() - unique.len()
        );
        assert_eq!(unique, pushed);
    }
    assert!(
        pushed.len() > 100,
        "the pushers made progress: {}",
        pushed.len()
    );
    let _ = Json::Null;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_instances_8_pushers_2_pullers() {
    run(Backend::Postgres, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_instances_8_pushers_2_pullers() {
    run(Backend::Sqlite, 2).await;
}
