//! Wall time per stage of a step, for the log lines that profile a run.

/// Wall time per stage, for log lines (`batch done`, `start-up done`): `stages_ms=a=3 b=12`.
pub struct Stages {
    last: std::time::Instant,
    done: Vec<(&'static str, u128)>,
}

impl Stages {
    pub fn start() -> Self {
        Stages {
            last: std::time::Instant::now(),
            done: Vec::new(),
        }
    }

    pub fn mark(&mut self, stage: &'static str) {
        let now = std::time::Instant::now();
        self.done.push((stage, (now - self.last).as_millis()));
        self.last = now;
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(s, ms)| format!("{s}={ms}"))
            .collect();
        f.write_str(&parts.join(" "))
    }
}
