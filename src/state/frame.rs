//! The journal's frame: `len u32 | crc32 u32 | payload`, the payload `op u8 | key len u32 | key |
//! value`. Each batch ends with a frame carrying its sequence number. A torn tail (a power cut
//! mid-write) fails the length or CRC check and is cut; bytes that fail it anywhere else are
//! damage, reported and stepped over (`scan`).

const OP_PUT: u8 = b'P';
const OP_DELETE: u8 = b'D';
/// A frame larger than this is corruption, not a record.
const MAX_FRAME: usize = 16 << 20;

/// One change to a keyed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// The little-endian u32 that `bytes` (4 of them) hold.
fn le32(bytes: &[u8]) -> usize {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize
}

pub(super) fn encode(update: &Update, out: &mut Vec<u8>) {
    match update {
        Update::Put { key, value } => encode_op(OP_PUT, key, value, out),
        Update::Delete { key } => encode_op(OP_DELETE, key, &[], out),
    }
}

/// Appends the frame putting `key` = `value`, from borrowed parts (compaction writes every
/// live record this way without copying it first).
pub(super) fn encode_put(key: &str, value: &[u8], out: &mut Vec<u8>) {
    encode_op(OP_PUT, key, value, out)
}

fn encode_op(op: u8, key: &str, value: &[u8], out: &mut Vec<u8>) {
    let len = 1 + 4 + key.len() + value.len();
    let start = out.len();
    out.reserve(8 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(op);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    let sum = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
}

/// The frame at `pos`, if a whole and intact one starts there, and where the next begins.
fn frame_at(bytes: &[u8], pos: usize) -> Option<(Update, usize)> {
    let header = bytes.get(pos..pos + 8)?;
    let (len, sum) = (le32(&header[..4]), le32(&header[4..]));
    if !(5..=MAX_FRAME).contains(&len) {
        return None;
    }
    let payload = bytes.get(pos + 8..pos + 8 + len)?;
    if crc32fast::hash(payload) as usize != sum {
        return None;
    }
    let key_len = le32(&payload[1..5]);
    let key = std::str::from_utf8(payload.get(5..5 + key_len)?)
        .ok()?
        .to_string();
    let update = match payload[0] {
        OP_PUT => Update::Put {
            key,
            value: payload[5 + key_len..].to_vec(),
        },
        OP_DELETE => Update::Delete { key },
        _ => return None,
    };
    Some((update, pos + 8 + len))
}

/// The key of the frame that ends every batch: its sequence number (u64, little endian). A
/// batch is decided in order, so a later batch's frames on disk prove every earlier batch was
/// synced; and the journal's last sequence number says how far it reaches.
pub(super) const SEQ_KEY: &str = "journal/seq";

/// The journal's own records (`SEQ_KEY`, the damage record) start with this; no backend's do.
pub(super) const JOURNAL_PREFIX: &str = "journal/";

/// Where the intact frames of a file stop, and why.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Every intact frame, in order (frames after damage included).
    pub updates: Vec<Update>,
    /// Where the next frame may be written: the end of the last frame or damaged byte kept.
    pub end: usize,
    /// A torn write, never acknowledged, to be zeroed: `from..to`.
    pub torn: Option<(usize, usize)>,
    /// Damaged ranges: bytes that are no frame although frames of later batches follow (or
    /// that cannot be a torn write). What they held is lost.
    pub damaged: Vec<(usize, usize)>,
}

/// The size of the unit a device writes whole: a torn write leaves at least one of them as it
/// was before, which in a log is zeros (logs are zero-filled when made, and frames are only
/// written past the last durable one).
const SECTOR: usize = 512;

/// Whether some sector that `from..to` overlaps is zero over all of that overlap.
fn has_unwritten_sector(bytes: &[u8], from: usize, to: usize) -> bool {
    (from / SECTOR..to.div_ceil(SECTOR)).any(|sector| {
        let overlap = (sector * SECTOR).max(from)..((sector + 1) * SECTOR).min(to);
        !overlap.is_empty() && bytes[overlap].iter().all(|b| *b == 0)
    })
}

/// Reads every intact frame of `bytes`, and tells a torn tail from damage. Only a tail may be
/// a torn write: the last batch, never synced, partly on disk. Bytes that are no frame are
/// damage instead when a later batch follows them (a batch is written only after the one
/// before it was synced) or when no sector of them is unwritten (a write that never reached
/// the disk leaves zeros; a flipped bit does not). `log`: a log, where the last batch can be
/// torn; a snapshot (renamed into place only once synced) cannot be.
pub(super) fn scan(bytes: &[u8], log: bool) -> Scan {
    let mut out = Scan::default();
    let mut pos = 0;
    loop {
        while let Some((update, next)) = frame_at(bytes, pos) {
            out.updates.push(update);
            pos = next;
        }
        let dirty_end = bytes[pos..]
            .iter()
            .rposition(|b| *b != 0)
            .map_or(pos, |p| pos + p + 1);
        if dirty_end == pos {
            out.end = pos;
            return out;
        }
        // The next intact frame after the bad bytes, if any.
        let resume = (pos + 1..dirty_end).find(|q| frame_at(bytes, *q).is_some());
        let bad_end = resume.unwrap_or(dirty_end);
        // A frame whose header survived claims its extent: a write cut short leaves the rest
        // of it zeros (past `dirty_end`) or missing (past the end of the file).
        let claimed_end = bytes
            .get(pos..pos + 4)
            .map(le32)
            .filter(|len| (5..=MAX_FRAME).contains(len))
            .map_or(pos, |len| pos + 8 + len);
        let unwritten = claimed_end > bytes.len()
            || has_unwritten_sector(bytes, pos, dirty_end.max(claimed_end));
        let torn = log && unwritten && {
            // Frames after the bad bytes may be the torn batch's own (a page of it reached
            // the disk, an earlier one did not), but only up to its one closing frame.
            let rest = frames_between(bytes, bad_end, dirty_end);
            let closing = rest
                .iter()
                .position(|u| matches!(u, Update::Put { key, .. } if key == SEQ_KEY));
            closing.is_none_or(|c| c + 1 == rest.len())
        };
        if torn {
            out.end = pos;
            out.torn = Some((pos, dirty_end));
            return out;
        }
        out.damaged.push((pos, bad_end));
        pos = bad_end;
        if resume.is_none() {
            out.end = pos;
            return out;
        }
    }
}

/// Every intact frame in `from..to`, stepping over bytes that are none.
fn frames_between(bytes: &[u8], from: usize, to: usize) -> Vec<Update> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        match frame_at(bytes, pos) {
            Some((update, next)) => {
                out.push(update);
                pos = next;
            }
            None => pos += 1,
        }
    }
    out
}
