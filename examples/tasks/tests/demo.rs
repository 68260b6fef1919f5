//! The scripted demo runs to the end and shows the merges, the conflict and the
//! converged state.

use std::process::Command;

#[test]
fn the_demo_converges() {
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "likes (sum): 1 + 2 = 3",
        "conflict on `price_cents` (manual): base 199, laptop 229, server 249",
        "[laptop] title=\"Buy oat milk\" status=\"doing\" likes=3 tags=[\"urgent\", \"weekend\"] price_cents=229",
        "[phone] title=\"Buy oat milk\" status=\"doing\" likes=3 tags=[\"urgent\", \"weekend\"] price_cents=239",
        "converged: yes",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let last_phone = stdout
        .lines()
        .rfind(|l| l.contains("[phone] title"))
        .unwrap();
    let last_laptop = stdout
        .lines()
        .rfind(|l| l.contains("[laptop] title"))
        .unwrap();
    assert_eq!(
        last_phone.replace("[phone]", ""),
        last_laptop.replace("[laptop]", "")
    );
}
