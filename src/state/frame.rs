//! The journal's frame: `len u32 | crc32 u32 | payload`, the payload `op u8 | key len u32 | key |
//! value`. A torn tail (a power cut mid-write) fails the length or CRC check, so decoding stops
//! at the last intact frame.

/// Put a record.
const OP_PUT: u8 = b'P';
/// Remove a record.
const OP_DELETE: u8 = b'D';
/// A frame larger than this is corruption, not a record.
const MAX_FRAME: usize = 16 << 20;

/// One change to a keyed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

fn crc(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

/// Appends the frame of `update` to `out`.
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
    let sum = crc(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
}

/// Decodes frames from `bytes`; returns the updates and the length of the intact prefix.
pub(super) fn decode(bytes: &[u8]) -> (Vec<Update>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if !(5..=MAX_FRAME).contains(&len) || bytes.len() - pos - 8 < len {
            break;
        }
        let payload = &bytes[pos + 8..pos + 8 + len];
        if crc(payload) != sum {
            break;
        }
        let key_len = u32::from_le_bytes(payload[1..5].try_into().expect("4 bytes")) as usize;
        if 5 + key_len > payload.len() {
            break;
        }
        let Ok(key) = std::str::from_utf8(&payload[5..5 + key_len]) else {
            break;
        };
        let key = key.to_string();
        let update = match payload[0] {
            OP_PUT => Update::Put {
                key,
                value: payload[5 + key_len..].to_vec(),
            },
            OP_DELETE => Update::Delete { key },
            _ => break,
        };
        out.push(update);
        pos += 8 + len;
    }
    (out, pos)
}
