//! Progress behind the library's `Progress` trait: indicatif bars on a
//! terminal; plain lines when stderr is a file or a pipe (CI logs, `nohup`),
//! one when a stage starts, one every few seconds while it runs (done /
//! total, rate, ETA) and one when it ends; nothing with `--quiet`.

use cpack_core::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where progress goes.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    Bars,
    /// A plain line at least this often while a stage runs.
    Lines(Duration),
    Quiet,
}

impl Output {
    /// Bars on a terminal, lines every `every` otherwise, or nothing.
    pub fn for_stderr(quiet: bool, every: Duration) -> Self {
        if quiet {
            Output::Quiet
        } else if std::io::stderr().is_terminal() {
            Output::Bars
        } else {
            Output::Lines(every)
        }
    }
}

pub struct Reporter {
    output: Output,
    current: Mutex<Option<Stage>>,
}

struct Stage {
    name: String,
    total: u64,
    done: u64,
    tokens: u64,
    detail: String,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

impl Stage {
    fn rates(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / seconds;
        // Slow stages (training steps) read better as seconds per item.
        let mut text = if rate >= 1.0 || self.done == 0 {
            format!("{rate:.1}/s")
        } else {
            format!("{:.1} s each", seconds / self.done as f64)
        };
        if self.tokens > 0 {
            text += &format!(" · {:.0} tokens/s", self.tokens as f64 / seconds);
        }
        if !self.detail.is_empty() {
            text += &format!(" · {}", self.detail);
        }
        text
    }

    /// `name: done/total (pct) · rates · eta`, for the line output.
    fn line(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        if self.total == 0 {
            return format!("{}: {} · {}", self.name, clock(seconds), self.rates());
        }
        let share = self.done as f64 / self.total as f64;
        let eta = if self.done > 0 {
            format!(" · eta {}", clock(seconds * (1.0 - share) / share))
        } else {
            String::new()
        };
        format!(
            "{}: {}/{} ({:.0} %) · {}{eta}",
            self.name,
            self.done,
            self.total,
            share * 100.0,
            self.rates()
        )
    }
}

/// `1h02m03s`, `4m05s` or `6s`.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

impl Reporter {
    pub fn new(output: Output) -> Self {
        Reporter {
            output,
            current: Mutex::new(None),
        }
    }

    /// Whether `--quiet` silenced everything on stderr.
    pub fn is_quiet(&self) -> bool {
        matches!(self.output, Output::Quiet)
    }

    /// Ends the current stage (its bar, or its closing line).
    pub fn finish(&self) {
        let Some(stage) = self.current.lock().expect("progress lock").take() else {
            return;
        };
        Self::close(&self.output, stage);
    }

    fn close(output: &Output, stage: Stage) {
        match (output, &stage.bar) {
            (_, Some(bar)) => bar.finish(),
            (Output::Lines(_), None) if stage.total == 0 => errln!(
                "{}: done in {}",
                stage.name,
                clock(stage.started.elapsed().as_secs_f64())
            ),
            (Output::Lines(_), None) => errln!(
                "{}: done {} in {} · {}",
                stage.name,
                stage.done,
                clock(stage.started.elapsed().as_secs_f64()),
                stage.rates()
            ),
            _ => {}
        }
    }

    fn bar(name: &str, total: u64) -> ProgressBar {
        let bar = if total == 0 {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
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
        bar
    }

    /// Draws the current stage's state after a change.
    fn show(&self, stage: &mut Stage) {
        match self.output {
            Output::Bars => {
                if let Some(bar) = &stage.bar {
                    bar.set_position(stage.done);
                    bar.set_message(stage.rates());
                }
            }
            Output::Lines(every) if stage.last_line.elapsed() >= every => {
                stage.last_line = Instant::now();
                errln!("{}", stage.line());
            }
            _ => {}
        }
    }
}

impl Drop for Reporter {
    /// A stage still open here ended with an error: its bar is cleared and
    /// no "done" line is printed.
    fn drop(&mut self) {
        if let Some(stage) = self.current.lock().expect("progress lock").take() {
            if let Some(bar) = stage.bar {
                bar.finish_and_clear();
            }
        }
    }
}

impl Progress for Reporter {
    fn stage(&self, name: &str, total: u64) {
        self.finish();
        let bar = matches!(self.output, Output::Bars).then(|| Self::bar(name, total));
        if let Output::Lines(_) = self.output {
            match total {
                0 => errln!("{name}…"),
                n => errln!("{name}: {n} to do"),
            }
        }
        *self.current.lock().expect("progress lock") = Some(Stage {
            name: name.to_string(),
            total,
            done: 0,
            tokens: 0,
            detail: String::new(),
            started: Instant::now(),
            last_line: Instant::now(),
            bar,
        });
    }

    fn advance(&self, items: u64, tokens: u64) {
        if let Some(stage) = self.current.lock().expect("progress lock").as_mut() {
            stage.done += items;
            stage.tokens += tokens;
            self.show(stage);
        }
    }

    fn detail(&self, text: &str) {
        if let Some(stage) = self.current.lock().expect("progress lock").as_mut() {
            stage.detail = text.to_string();
        }
    }

    fn note(&self, message: &str) {
        if !matches!(self.output, Output::Quiet) {
            errln!("note: {message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_the_stage_count_and_eta() {
        let stage = Stage {
            name: "encoding passages".into(),
            total: 200,
            done: 50,
            tokens: 5000,
            detail: String::new(),
            started: Instant::now() - Duration::from_secs(10),
            last_line: Instant::now(),
            bar: None,
        };
        let line = stage.line();
        assert!(
            line.starts_with("encoding passages: 50/200 (25 %) · 5.0/s · 500 tokens/s"),
            "{line}"
        );
        assert!(line.ends_with("eta 30s"), "{line}");
        let slow = Stage {
            done: 4,
            total: 17,
            started: Instant::now() - Duration::from_secs(300),
            ..stage
        };
        assert!(
            slow.line().contains("(24 %) · 75.0 s each ·"),
            "{}",
            slow.line()
        );
        assert_eq!(clock(3723.0), "1h02m03s");
        assert_eq!(clock(65.0), "1m05s");
    }
}
