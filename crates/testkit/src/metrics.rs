//! A running proxy's `/metrics`, parsed just enough for assertions: a
//! series' value by name and label subset.

use std::collections::HashMap;

/// Prometheus text exposition, as `/metrics` served it.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

/// One series: name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

impl Metrics {
    pub fn samples(&self) -> Vec<Sample> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect()
    }

    /// Sum of every series of `name` whose labels include `labels`;
    /// None if there is no such series.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in self.samples() {
            if s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }

    /// Like `sum`, 0 when absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sum(name, labels).unwrap_or(0.0)
    }

    /// `payroute_config_reloads_total` split into (succeeded, failed),
    /// whatever the exact label values (`success`/`ok` count as success).
    pub fn reloads(&self) -> (f64, f64) {
        let mut ok = 0.0;
        let mut failed = 0.0;
        for s in self.samples() {
            if s.name != "payroute_config_reloads_total" {
                continue;
            }
            match s.labels.get("result").map(String::as_str) {
                Some("success") | Some("ok") | Some("succeeded") => ok += s.value,
                _ => failed += s.value,
            }
        }
        (ok, failed)
    }
}

/// One sample line (`name{labels} value`); `None` if it is not one.
fn parse_sample(line: &str) -> Option<Sample> {
    let (name_labels, value) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}')?;
            (&line[..=close], line[close + 1..].trim())
        }
        None => {
            let mut it = line.splitn(2, ' ');
            (it.next()?, it.next()?.trim())
        }
    };
    let value: f64 = value.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match name_labels.find('{') {
        Some(i) => (
            name_labels[..i].to_string(),
            parse_labels(&name_labels[i + 1..name_labels.len() - 1]),
        ),
        None => (name_labels.to_string(), HashMap::new()),
    };
    Some(Sample { name, labels, value })
}

fn parse_labels(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_string();
        rest = &rest[eq + 1..];
        if !rest.starts_with('"') {
            break;
        }
        rest = &rest[1..];
        let mut val = String::new();
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        out.insert(key, val);
        rest = &rest[end..];
    }
    out
}
