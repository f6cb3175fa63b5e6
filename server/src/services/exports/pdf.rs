//! The PDF summary (pdf-writer, the standard Type 1 fonts, A4): period and filters, totals by
//! action, risk and tool with bar charts, approvals with approvers and time to decision, denials
//! and their reasons, executions and failures, side effects, policy versions, the chain
//! verification result, and the selected framework's controls mapped to this evidence.

use super::summary::Summary;
use super::{rfc3339, Evidence, Framework};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use std::collections::BTreeMap;

const WIDTH: f32 = 595.0;
const HEIGHT: f32 = 842.0;
const MARGIN: f32 = 50.0;
const SANS: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");
const MONO: Name<'static> = Name(b"F3");

/// Text as WinAnsi bytes (what the standard fonts are set up with): printable ASCII and Latin-1
/// as they are, a few typographic marks mapped, anything else `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            '\u{2014}' => 0x97,
            '\u{2013}' => 0x96,
            '\u{2026}' => 0x85,
            '\u{2019}' => 0x92,
            _ => b'?',
        })
        .collect()
}

/// Pages being laid out top to bottom.
struct Layout {
    pages: Vec<Content>,
    page: Content,
    y: f32,
}

impl Layout {
    fn new() -> Layout {
        Layout {
            pages: Vec::new(),
            page: Content::new(),
            y: HEIGHT - MARGIN,
        }
    }

    fn break_page(&mut self) {
        let done = std::mem::replace(&mut self.page, Content::new());
        self.pages.push(done);
        self.y = HEIGHT - MARGIN;
    }

    /// Room for `height` more points, else a new page.
    fn need(&mut self, height: f32) {
        if self.y - height < MARGIN {
            self.break_page();
        }
    }

    fn text_at(&mut self, font: Name<'_>, size: f32, x: f32, y: f32, text: &str) {
        let bytes = win_ansi(text);
        self.page
            .begin_text()
            .set_font(font, size)
            .next_line(x, y)
            .show(Str(&bytes))
            .end_text();
    }

    /// One line of text at the left margin (indented by `indent`).
    fn line(&mut self, font: Name<'_>, size: f32, indent: f32, text: &str) {
        let leading = size * 1.35;
        self.need(leading);
        self.y -= leading;
        let y = self.y;
        self.text_at(font, size, MARGIN + indent, y, text);
    }

    /// A paragraph wrapped to the page width (an estimate of Helvetica's widths).
    fn paragraph(&mut self, size: f32, text: &str) {
        let per_line = ((WIDTH - 2.0 * MARGIN) / (size * 0.5)) as usize;
        let mut current = String::new();
        for word in text.split_whitespace() {
            if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > per_line
            {
                self.line(SANS, size, 0.0, &current);
                current.clear();
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(word);
        }
        if !current.is_empty() {
            self.line(SANS, size, 0.0, &current);
        }
    }

    fn heading(&mut self, text: &str) {
        self.need(40.0);
        self.y -= 10.0;
        self.line(BOLD, 13.0, 0.0, text);
        self.y -= 2.0;
    }

    /// A table in a monospaced font: a bold header row, then the rows; cells are cut to fit.
    fn table(&mut self, columns: &[(&str, usize)], rows: &[Vec<String>]) {
        const SIZE: f32 = 7.5;
        let char_width = SIZE * 0.6;
        let render = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for ((_, width), cell) in columns.iter().zip(cells) {
                let mut cell: String = cell.chars().filter(|c| !c.is_control()).collect();
                if cell.chars().count() > *width {
                    cell = cell
                        .chars()
                        .take(width.saturating_sub(1))
                        .collect::<String>()
                        + "~";
                }
                out.push_str(&format!("{cell:<width$} ", width = *width));
            }
            out.trim_end().to_string()
        };
        let header = render(&mut columns.iter().map(|(title, _)| *title));
        let total: usize = columns.iter().map(|(_, w)| w + 1).sum();
        debug_assert!(total as f32 * char_width <= WIDTH - 2.0 * MARGIN + 1.0);
        self.need(SIZE * 4.0);
        self.line(MONO, SIZE, 0.0, &header);
        let y = self.y - 2.5;
        self.page
            .set_stroke_rgb(0.6, 0.6, 0.6)
            .move_to(MARGIN, y)
            .line_to(MARGIN + total as f32 * char_width, y)
            .stroke();
        self.y -= 2.0;
        for row in rows {
            self.line(
                MONO,
                SIZE,
                0.0,
                &render(&mut row.iter().map(String::as_str)),
            );
        }
    }

    /// Horizontal bars for counts, labelled, scaled to the largest.
    fn bars(&mut self, counts: &BTreeMap<String, u64>) {
        let max = counts.values().copied().max().unwrap_or(0).max(1) as f32;
        let full = WIDTH - 2.0 * MARGIN - 190.0;
        for (label, n) in counts {
            self.need(14.0);
            self.y -= 13.0;
            let y = self.y;
            self.text_at(SANS, 8.5, MARGIN, y, label);
            let width = (*n as f32 / max * full).max(1.0);
            let (r, g, b) = colour(label);
            self.page
                .set_fill_rgb(r, g, b)
                .rect(MARGIN + 120.0, y - 1.5, width, 9.0)
                .fill_nonzero()
                .set_fill_rgb(0.0, 0.0, 0.0);
            self.text_at(SANS, 8.5, MARGIN + 126.0 + width, y, &n.to_string());
        }
    }

    fn finish(mut self) -> Vec<Content> {
        self.break_page();
        self.pages
    }
}

/// The same colours the portal uses for actions and risks.
fn colour(label: &str) -> (f32, f32, f32) {
    match label {
        "allow" | "LOW" | "success" => (0.18, 0.55, 0.34),
        "require_approval" | "MEDIUM" => (0.85, 0.6, 0.1),
        "HIGH" => (0.85, 0.4, 0.1),
        "deny" | "CRITICAL" | "failure" | "timeout" => (0.75, 0.15, 0.15),
        _ => (0.3, 0.4, 0.6),
    }
}

fn duration(secs: Option<i64>) -> String {
    match secs {
        None => "-".to_string(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) if s < 7_200 => format!("{} min", s / 60),
        Some(s) => format!("{:.1} h", s as f64 / 3600.0),
    }
}

fn short_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// What a piece of evidence shows in this report, in one line.
fn evidence_line(summary: &Summary, evidence: Evidence) -> String {
    match evidence {
        Evidence::Trail => format!(
            "{} audit events recorded with caller, tool, operation, time, outcome and risk (events.csv / events.jsonl)",
            summary.events
        ),
        Evidence::Chain => format!("hash chain {}", summary.chain.describe()),
        Evidence::Decisions => format!(
            "{} policy decisions: {}",
            summary.decisions,
            counts_text(&summary.by_action)
        ),
        Evidence::Approvals => format!(
            "{} approvals recorded with their approvers and time to decision",
            summary.approvals_total
        ),
        Evidence::Denials => format!(
            "{} denials with their reasons (enforcer and reviewers)",
            summary.denials_total
        ),
        Evidence::Executions => format!(
            "executions: {}; {} failures; {} distinct side effects",
            counts_text(&summary.executions),
            summary.failures_total,
            summary.side_effects.len()
        ),
    }
}

fn counts_text(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn evidence_name(evidence: Evidence) -> &'static str {
    match evidence {
        Evidence::Trail => "Audit trail",
        Evidence::Chain => "Chain verification",
        Evidence::Decisions => "Decisions",
        Evidence::Approvals => "Approvals",
        Evidence::Denials => "Denials",
        Evidence::Executions => "Executions",
    }
}

/// Lay out the report's pages.
fn lay_out(summary: &Summary) -> Vec<Content> {
    let mut doc = Layout::new();
    doc.line(BOLD, 18.0, 0.0, "Countersign audit evidence report");
    if let Some(spec) = &summary.spec {
        doc.y -= 4.0;
        doc.line(
            SANS,
            10.0,
            0.0,
            &format!(
                "Period: {} to {} (UTC, end exclusive)",
                rfc3339(spec.from),
                rfc3339(spec.to)
            ),
        );
        let filters = spec.filters();
        doc.line(
            SANS,
            10.0,
            0.0,
            &format!(
                "Filters: {}",
                if filters.is_empty() {
                    "none".to_string()
                } else {
                    filters
                        .iter()
                        .map(|(k, v)| format!("{k} = {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        );
        doc.line(
            SANS,
            10.0,
            0.0,
            &format!(
                "Framework: {}",
                spec.framework
                    .map_or("all (PCI DSS, SOC 2, ISO/IEC 27001)", Framework::title)
            ),
        );
    }
    doc.line(
        SANS,
        10.0,
        0.0,
        &format!(
            "Generated {} by {}",
            summary.generated_at.map(rfc3339).unwrap_or_default(),
            summary.generated_by
        ),
    );

    doc.heading("Totals");
    doc.line(
        SANS,
        10.0,
        0.0,
        &format!("Audit events: {}", summary.events),
    );
    doc.line(
        SANS,
        10.0,
        0.0,
        &format!("Decisions: {}", summary.decisions),
    );
    doc.line(
        SANS,
        10.0,
        0.0,
        &format!("Approvals: {}", summary.approvals_total),
    );
    doc.line(
        SANS,
        10.0,
        0.0,
        &format!("Denials: {}", summary.denials_total),
    );
    doc.line(
        SANS,
        10.0,
        0.0,
        &format!(
            "Executions: {} ({} failed)",
            summary.executions.values().sum::<u64>(),
            summary.failures_total
        ),
    );
    doc.line(
        SANS,
        10.0,
        0.0,
        &format!(
            "Sign-ins: {}; exports: {}",
            summary.sign_ins, summary.exports
        ),
    );
    doc.line(
        SANS,
        10.0,
        0.0,
        &format!("Events by kind: {}", counts_text(&summary.by_kind)),
    );
    for (title, counts) in [
        ("Decisions by action", &summary.by_action),
        ("Decisions by risk", &summary.by_risk),
        ("Decisions by tool", &summary.by_tool),
    ] {
        doc.need(30.0);
        doc.y -= 6.0;
        doc.line(BOLD, 10.0, 0.0, title);
        if counts.is_empty() {
            doc.line(SANS, 9.0, 0.0, "none");
        } else {
            doc.bars(counts);
        }
    }

    doc.heading("Chain verification");
    doc.paragraph(10.0, &summary.chain.describe());
    if summary.chain.rows > 0 {
        doc.line(
            MONO,
            7.5,
            0.0,
            &format!("links to: {}", summary.chain.prev_hash),
        );
    }

    doc.heading("Approvals");
    doc.line(
        SANS,
        9.0,
        0.0,
        &format!(
            "{} approvals{}",
            summary.approvals_total,
            capped(summary.approvals_total, summary.approvals.len())
        ),
    );
    let rows: Vec<Vec<String>> = summary
        .approvals
        .iter()
        .map(|a| {
            vec![
                short_time(a.at),
                a.approver.clone(),
                format!("{} {}", a.tool, a.operation),
                a.risk.clone(),
                duration(a.secs_to_decision),
                a.job_id.clone(),
            ]
        })
        .collect();
    doc.table(
        &[
            ("Time (UTC)", 19),
            ("Approver", 12),
            ("Tool / operation", 26),
            ("Risk", 8),
            ("To decide", 9),
            ("Job", 30),
        ],
        &rows,
    );

    doc.heading("Denials");
    doc.line(
        SANS,
        9.0,
        0.0,
        &format!(
            "{} denials{}",
            summary.denials_total,
            capped(summary.denials_total, summary.denials.len())
        ),
    );
    let mut reasons: Vec<(&String, &u64)> = summary.denial_reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let rows: Vec<Vec<String>> = reasons
        .iter()
        .take(20)
        .map(|(reason, n)| vec![n.to_string(), (*reason).clone()])
        .collect();
    if !rows.is_empty() {
        doc.line(BOLD, 9.0, 0.0, "Most frequent reasons");
        doc.table(&[("Count", 6), ("Reason", 102)], &rows);
        doc.y -= 6.0;
    }
    let rows: Vec<Vec<String>> = summary
        .denials
        .iter()
        .map(|d| {
            vec![
                short_time(d.at),
                d.caller.clone(),
                format!("{} {}", d.tool, d.operation),
                d.risk.clone(),
                d.reason.clone(),
            ]
        })
        .collect();
    doc.table(
        &[
            ("Time (UTC)", 19),
            ("Caller", 12),
            ("Tool / operation", 26),
            ("Risk", 8),
            ("Reason", 40),
        ],
        &rows,
    );

    doc.heading("Executions and failures");
    doc.line(
        SANS,
        9.0,
        0.0,
        &format!("By status: {}", counts_text(&summary.executions)),
    );
    let rows: Vec<Vec<String>> = summary
        .failures
        .iter()
        .map(|f| {
            vec![
                short_time(f.at),
                format!("{} {}", f.tool, f.operation),
                f.status.clone(),
                f.error.clone(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        doc.table(
            &[
                ("Time (UTC)", 19),
                ("Tool / operation", 28),
                ("Status", 9),
                ("Error", 50),
            ],
            &rows,
        );
    }

    doc.heading("Side effects");
    if summary.side_effects.is_empty() {
        doc.line(SANS, 9.0, 0.0, "none recorded");
    } else {
        let rows: Vec<Vec<String>> = summary
            .side_effects
            .iter()
            .take(100)
            .map(|(effect, n)| vec![n.to_string(), effect.clone()])
            .collect();
        doc.table(&[("Count", 6), ("Side effect", 102)], &rows);
    }

    doc.heading("Policy versions in force");
    doc.line(
        SANS,
        9.0,
        0.0,
        &format!("Active at generation: {}", summary.current_policy),
    );
    let rows: Vec<Vec<String>> = summary
        .policies
        .iter()
        .map(|(hash, seen)| {
            vec![
                hash.clone(),
                short_time(seen.first),
                short_time(seen.last),
                seen.rows.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        doc.table(
            &[
                ("Policy hash", 64),
                ("First seen", 19),
                ("Last seen", 19),
                ("Rows", 4),
            ],
            &rows,
        );
    }

    let frameworks: Vec<Framework> = match summary.spec.as_ref().and_then(|s| s.framework) {
        Some(f) => vec![f],
        None => Framework::ALL.to_vec(),
    };
    for framework in frameworks {
        doc.heading(&format!("Controls: {}", framework.title()));
        for control in framework.controls() {
            doc.need(40.0);
            doc.line(BOLD, 9.5, 0.0, &format!("{} {}", control.id, control.title));
            for evidence in control.evidence {
                doc.line(
                    SANS,
                    8.5,
                    12.0,
                    &format!(
                        "{}: {}",
                        evidence_name(*evidence),
                        evidence_line(summary, *evidence)
                    ),
                );
            }
        }
    }
    doc.finish()
}

fn capped(total: u64, shown: usize) -> String {
    if total > shown as u64 {
        format!(" (the first {shown} shown; all are in the CSV)")
    } else {
        String::new()
    }
}

/// The report as PDF bytes.
pub fn render(summary: &Summary) -> Vec<u8> {
    let pages = lay_out(summary);
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let info = Ref::new(3);
    let fonts = [
        (SANS, Ref::new(4), "Helvetica"),
        (BOLD, Ref::new(5), "Helvetica-Bold"),
        (MONO, Ref::new(6), "Courier"),
    ];
    let mut next = 7;
    let mut ids = Vec::with_capacity(pages.len());
    for _ in &pages {
        ids.push((Ref::new(next), Ref::new(next + 1)));
        next += 2;
    }
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(ids.iter().map(|(page, _)| *page))
        .count(i32::try_from(ids.len()).unwrap_or(i32::MAX));
    let mut info_writer = pdf.document_info(info);
    info_writer.title(TextStr("Countersign audit evidence report"));
    info_writer.producer(TextStr("Countersign"));
    info_writer.finish();
    for (_, id, base) in fonts {
        pdf.type1_font(id)
            .base_font(Name(base.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    let count = pages.len();
    for (index, (content, (page_id, content_id))) in pages.into_iter().zip(&ids).enumerate() {
        let mut content = content;
        // Page numbers at the foot.
        let footer = win_ansi(&format!(
            "Countersign evidence report - page {} of {count}",
            index + 1
        ));
        content
            .begin_text()
            .set_font(SANS, 7.5)
            .next_line(MARGIN, MARGIN / 2.0)
            .show(Str(&footer))
            .end_text();
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, WIDTH, HEIGHT));
        page.parent(tree);
        page.contents(*content_id);
        let mut resources = page.resources();
        let mut font_map = resources.fonts();
        for (name, id, _) in fonts {
            font_map.pair(name, id);
        }
        font_map.finish();
        resources.finish();
        page.finish();
        pdf.stream(*content_id, &content.finish());
    }
    pdf.finish()
}
