//! `cpack report --png`: the run's curves as a picture (plotters, drawn into
//! memory with an embedded DejaVu Sans, so no system font is needed).

use super::Curves;
use anyhow::{anyhow, Context as _, Result};
use cpack_core::OutputTarget;
use plotters::coord::Shift;
use plotters::prelude::*;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 420;
const FONT: &str = "sans-serif";

/// Draws nDCG@10 and the mean loss per epoch side by side and writes them
/// as a PNG into `target`.
pub fn write(curves: &Curves, target: &OutputTarget) -> Result<()> {
    register_font()?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        panel(&left, &curves.metric_title, &curves.ndcg).map_err(drawing)?;
        panel(&right, "mean training loss", &curves.loss).map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&pixels, WIDTH, HEIGHT, image::ExtendedColorType::Rgb8)
        .context("encoding the PNG")?;
    Ok(target.write(&png)?)
}

use image::ImageEncoder as _;

fn drawing(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    ok.then_some(())
        .context("the embedded font could not be loaded")
}

/// One line chart: x = epoch (0 is the base model), labelled points.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    points: &[(f64, f64)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let xmax = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (lo, hi) = if points.is_empty() {
        (0.0, 1.0)
    } else {
        (lo, hi)
    };
    let margin = ((hi - lo) * 0.2).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(14)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.25..xmax + 0.25, lo - margin..hi + margin)?;
    chart
        .configure_mesh()
        .x_labels(2 * xmax as usize + 3)
        .x_label_formatter(&|x| epoch_label(*x))
        .y_label_formatter(&|y| format!("{y:.3}"))
        .label_style((FONT, 13))
        .draw()?;
    let colour = RGBColor(37, 99, 235);
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        colour.stroke_width(2),
    ))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
    chart.draw_series(
        points
            .iter()
            .map(|&(x, y)| Text::new(format!("{y:.4}"), (x + 0.04, y + margin * 0.15), (FONT, 13))),
    )?;
    Ok(())
}

/// "base" at 0, "epoch N" at whole numbers, nothing between.
fn epoch_label(x: f64) -> String {
    if (x - x.round()).abs() > 1e-6 || x < -1e-6 {
        String::new()
    } else if x.round() == 0.0 {
        "base".into()
    } else {
        format!("epoch {}", x.round())
    }
}
