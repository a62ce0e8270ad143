//! Charts drawn on the server as SVG: a series of values over equal time buckets, as bars or
//! lines, with a y axis of round numbers and time labels under it. No script draws them, so a
//! page is complete as it arrives. Colours come from the stylesheet (classes `s0`, `s1`, ...).

use maud::{html, Markup};

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 200.0;
/// Room for the y labels on the left and the time labels below.
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// How a chart draws its series.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bars side by side in each bucket.
    Bars,
    /// Lines through the buckets that have a value.
    Lines,
}

/// One named series: a value per bucket, `None` where there is none (no requests).
pub struct Series {
    pub name: &'static str,
    pub values: Vec<Option<f64>>,
}

/// A chart of `series` over buckets labelled `labels` (one per bucket).
pub struct Chart<'a> {
    pub title: &'a str,
    pub kind: Kind,
    pub series: Vec<Series>,
    pub labels: &'a [String],
    /// How a y value is written (`12 ms`, `$0.10`, `40%`).
    pub format: fn(f64) -> String,
    /// The top of the y axis at least (1.0 for a rate, say), whatever the values.
    pub min_top: f64,
}

/// A round number at or above `value`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|top| *top >= value * 0.999_999)
        .unwrap_or(10.0 * magnitude)
}

impl Chart<'_> {
    pub fn render(&self) -> Markup {
        let buckets = self.labels.len().max(1);
        let highest = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .fold(0.0f64, |a, b| a.max(*b));
        let top = nice_ceiling(highest.max(self.min_top));
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let slot = plot_w / buckets as f64;
        let y = |v: f64| TOP + plot_h * (1.0 - (v / top).clamp(0.0, 1.0));
        let x_mid = |i: usize| LEFT + slot * (i as f64 + 0.5);
        let ticks = [0.0, 0.25, 0.5, 0.75, 1.0];
        // About six time labels, on whole buckets.
        let label_every = buckets.div_ceil(6).max(1);
        let empty = highest == 0.0;
        html! {
            figure.chart {
                figcaption {
                    (self.title)
                    @if self.series.len() > 1 {
                        span.legend {
                            @for (i, s) in self.series.iter().enumerate() {
                                span class=(format!("key s{i}")) { (s.name) }
                            }
                        }
                    }
                }
                svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
                    aria-label=(self.title) xmlns="http://www.w3.org/2000/svg" {
                    @for t in ticks {
                        line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(t * top)) y2=(y(t * top)) {}
                        text.ylabel x=(LEFT - 6.0) y=(y(t * top) + 4.0) { ((self.format)(t * top)) }
                    }
                    @for (i, label) in self.labels.iter().enumerate() {
                        @if i % label_every == 0 {
                            text.xlabel x=(x_mid(i)) y=(HEIGHT - 6.0) { (label) }
                        }
                    }
                    @match self.kind {
                        Kind::Bars => {
                            @let width = (slot * 0.8 / self.series.len().max(1) as f64).max(0.5);
                            @for (n, s) in self.series.iter().enumerate() {
                                @for (i, value) in s.values.iter().enumerate() {
                                    @if let Some(v) = value.filter(|v| *v > 0.0) {
                                        rect class=(format!("s{n}"))
                                            x=(LEFT + slot * i as f64 + slot * 0.1 + width * n as f64)
                                            y=(y(v)) width=(width) height=(TOP + plot_h - y(v)) {
                                            title { (self.labels.get(i).map_or("", String::as_str)) " · " (s.name) ": " ((self.format)(v)) }
                                        }
                                    }
                                }
                            }
                        }
                        Kind::Lines => {
                            @for (n, s) in self.series.iter().enumerate() {
                                path class=(format!("line s{n}")) d=(line_path(&s.values, &x_mid, &y)) {}
                                @for (i, value) in s.values.iter().enumerate() {
                                    @if let Some(v) = value {
                                        circle class=(format!("s{n}")) cx=(x_mid(i)) cy=(y(*v)) r="2" {
                                            title { (self.labels.get(i).map_or("", String::as_str)) " · " (s.name) ": " ((self.format)(*v)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    line.axis x1=(LEFT) x2=(WIDTH - RIGHT) y1=(TOP + plot_h) y2=(TOP + plot_h) {}
                    @if empty {
                        text.nodata x=(LEFT + plot_w / 2.0) y=(TOP + plot_h / 2.0) { "nothing in this window" }
                    }
                }
            }
        }
    }
}

/// An SVG path through the points that have a value; a gap starts a new segment.
fn line_path(values: &[Option<f64>], x: &dyn Fn(usize) -> f64, y: &dyn Fn(f64) -> f64) -> String {
    let mut d = String::new();
    let mut drawing = false;
    for (i, value) in values.iter().enumerate() {
        match value {
            Some(v) => {
                d.push_str(&format!(
                    "{}{:.1},{:.1} ",
                    if drawing { "L" } else { "M" },
                    x(i),
                    y(*v)
                ));
                drawing = true;
            }
            None => drawing = false,
        }
    }
    d
}

/// A count as people read it: `950`, `12.5k`, `3.2M`.
pub fn count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn millis(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v < 10.0 && v.fract() != 0.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

pub fn percent(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

pub fn usd(v: f64) -> String {
    if v == 0.0 {
        "$0".into()
    } else if v < 0.01 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
        assert_eq!(nice_ceiling(0.004), 0.005);
        assert_eq!(nice_ceiling(1.0), 1.0);
    }

    #[test]
    fn lines_break_at_gaps() {
        let d = line_path(
            &[Some(1.0), Some(2.0), None, Some(3.0)],
            &|i| i as f64,
            &|v| v,
        );
        assert_eq!(d, "M0.0,1.0 L1.0,2.0 M3.0,3.0 ");
    }

    #[test]
    fn a_chart_is_svg_with_its_values() {
        let labels = vec!["10:00".to_owned(), "10:01".to_owned()];
        let chart = Chart {
            title: "Requests",
            kind: Kind::Bars,
            series: vec![Series {
                name: "requests",
                values: vec![Some(3.0), None],
            }],
            labels: &labels,
            format: count,
            min_top: 1.0,
        }
        .render()
        .into_string();
        assert!(chart.contains("<svg"), "{chart}");
        assert_eq!(chart.matches("<rect").count(), 1);
        assert!(chart.contains("10:00 · requests: 3"));
    }
}
