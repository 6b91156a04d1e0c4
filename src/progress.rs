//! Terminal progress bars (indicatif) behind the library's `Progress` trait.

use cpack_index::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Mutex;
use std::time::Instant;

/// One bar per stage, with items/s and tokens/s; hidden when `quiet` or
/// when stderr is not a terminal (indicatif's default).
pub struct Bars {
    quiet: bool,
    current: Mutex<Option<Stage>>,
}

struct Stage {
    bar: ProgressBar,
    started: Instant,
    tokens: u64,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Bars {
            quiet,
            current: Mutex::new(None),
        }
    }

    /// Ends the current stage's bar.
    pub fn finish(&self) {
        if let Some(stage) = self.current.lock().expect("progress lock").take() {
            stage.bar.finish();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Progress for Bars {
    fn stage(&self, name: &str, total: u64) {
        self.finish();
        let bar = if self.quiet {
            ProgressBar::hidden()
        } else if total == 0 {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        } else {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        };
        let template = if total == 0 {
            "{spinner} {prefix} {elapsed}"
        } else {
            "{prefix:>18} [{bar:30}] {pos}/{len} {msg} eta {eta}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        *self.current.lock().expect("progress lock") = Some(Stage {
            bar,
            started: Instant::now(),
            tokens: 0,
        });
    }

    fn advance(&self, items: u64, tokens: u64) {
        if let Some(stage) = self.current.lock().expect("progress lock").as_mut() {
            stage.bar.inc(items);
            stage.tokens += tokens;
            let seconds = stage.started.elapsed().as_secs_f64().max(1e-3);
            let rate = stage.bar.position() as f64 / seconds;
            stage.bar.set_message(if stage.tokens > 0 {
                format!("{rate:.0}/s · {:.0} tok/s", stage.tokens as f64 / seconds)
            } else {
                format!("{rate:.0}/s")
            });
        }
    }

    fn note(&self, message: &str) {
        if !self.quiet {
            eprintln!("note: {message}");
        }
    }
}
