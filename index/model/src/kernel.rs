//! What every hand-written CPU kernel (custom op) checks first: f32 data,
//! contiguous in memory.

use candle_core::{bail, CpuStorage, Layout, Result};

/// The f32 elements `layout` covers, and its last dimension (the row length).
pub fn f32_rows<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<(&'a [f32], usize)> {
    let CpuStorage::F32(data) = storage else {
        bail!("{op}: f32 input only")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: contiguous input only")
    };
    let cols = *layout.dims().last().unwrap_or(&1);
    Ok((&data[start..end], cols))
}
