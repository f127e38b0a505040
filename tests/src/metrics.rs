//! A small reader for the Prometheus text format, enough to look up series by labels.

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric name, e.g. `strangler_requests_total`.
    pub name: String,
    /// Label pairs in the order they appeared.
    pub labels: Vec<(String, String)>,
    /// The sample value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed `/metrics` answer.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The raw text.
    pub text: String,
    /// Every sample line.
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses Prometheus text exposition format (comments skipped).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_line)
            .collect();
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// All samples of metric `name` whose labels include every pair in `labels`.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .collect()
    }

    /// Sum of the values of [`Metrics::series`] (0 when none match).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name, labels).iter().map(|s| s.value).sum()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let name = &line[..open];
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (name, labels, after)
        }
        None => {
            let mut parts = line.splitn(2, char::is_whitespace);
            let name = parts.next()?;
            (name, Vec::new(), parts.next().unwrap_or(""))
        }
    };
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the pairs and the text after `}`.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ') {
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        if bytes[i] == b'}' {
            return Some((labels, &s[i + 1..]));
        }
        let eq = s[i..].find('=')? + i;
        let key = s[i..eq].trim().to_string();
        i = eq + 1;
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        i += 1;
        let mut value = String::new();
        while i < bytes.len() && bytes[i] != b'"' {
            if bytes[i] == b'\\' && i + 1 < bytes.len() {
                i += 1;
                value.push(match bytes[i] {
                    b'n' => '\n',
                    other => other as char,
                });
            } else {
                // Label values are UTF-8; copy whole characters.
                let ch = s[i..].chars().next()?;
                value.push(ch);
                i += ch.len_utf8() - 1;
            }
            i += 1;
        }
        i += 1;
        labels.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_values() {
        let m = Metrics::parse(
            "# HELP x y\nstrangler_requests_total{route=\"a\",upstream=\"b\",status=\"2xx\"} 3\nplain 1.5\nh_bucket{le=\"+Inf\"} 2\n",
        );
        assert_eq!(m.sum("strangler_requests_total", &[("route", "a")]), 3.0);
        assert_eq!(m.sum("plain", &[]), 1.5);
        assert_eq!(m.sum("h_bucket", &[("le", "+Inf")]), 2.0);
        assert_eq!(m.sum("strangler_requests_total", &[("route", "z")]), 0.0);
    }
}
