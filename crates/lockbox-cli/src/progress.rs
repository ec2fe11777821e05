//! Progress bars on stderr, only when stderr is a terminal and `--quiet` is not given.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A spinner with a message, for waits of unknown length (the password hash, a vault round trip).
pub fn spinner(msg: &'static str, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("static template"),
    );
    show_if_terminal(&bar, quiet);
    bar.set_message(msg);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

pub fn bytes(total: Option<u64>, msg: &'static str, quiet: bool) -> ProgressBar {
    let bar = match total {
        Some(t) => ProgressBar::new(t).with_style(bar_style()),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg:>10} {spinner} {bytes} {bytes_per_sec}")
                .expect("static template"),
        ),
    };
    show_if_terminal(&bar, quiet);
    bar.set_message(msg);
    bar
}

/// A bar with bytes, rate and time left, for work of known size.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .expect("static template")
    .progress_chars("=> ")
}

fn show_if_terminal(bar: &ProgressBar, quiet: bool) {
    let visible = !quiet && std::io::stderr().is_terminal();
    bar.set_draw_target(if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
}

/// A bar for a device operation and the callback that drives it: one bar whose message follows
/// the step (backup, verify, restore).
pub fn device(quiet: bool) -> (ProgressBar, impl FnMut(lockbox_client::Progress)) {
    use lockbox_client::Step;
    let bar = bytes(None, "backup", quiet);
    let shown = bar.clone();
    let mut step = None;
    let on = move |p: lockbox_client::Progress| {
        if step != Some(p.step) {
            step = Some(p.step);
            shown.set_message(match p.step {
                Step::Backup => "backup",
                Step::Verify => "verify",
                Step::Restore => "restore",
            });
            // Once the size is known, the spinner becomes a bar with the time left.
            if let Some(total) = p.total {
                shown.set_style(bar_style());
                shown.set_length(total);
            }
        }
        shown.set_position(p.bytes);
    };
    (bar, on)
}
