//! Just enough of Kubernetes' protobuf encoding for kubectl's typed-client creates: `kubectl
//! create namespace` sends `application/vnd.kubernetes.protobuf` (client-go's clientset
//! default), not JSON. The body is the `k8s\0` magic and a `runtime.Unknown` envelope
//! (`typeMeta`, `raw`); the stand-in decodes the envelope and, from `raw`, the object's
//! `ObjectMeta` (name, generateName, namespace, labels, annotations) — everything a
//! Namespace carries that matters. Other kinds in protobuf are refused (415): their specs
//! would be lost.

use serde_json::{Map, Value, json};

/// Why a protobuf body was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufError {
    /// Not the `k8s\0` envelope, or truncated.
    #[error("the protobuf body is malformed: {0}")]
    Malformed(&'static str),
    /// A kind whose fields beyond metadata the stand-in cannot decode.
    #[error("the simulator decodes only Namespace objects from protobuf, not {0}")]
    Unsupported(String),
}

/// One protobuf field: number and payload (varints as numbers, length-delimited as bytes).
enum Field<'a> {
    Varint,
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProtobufError> {
    let mut out = 0_u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*pos)
            .ok_or(ProtobufError::Malformed("truncated varint"))?;
        *pos += 1;
        out |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(ProtobufError::Malformed("varint too long"))
}

/// The fields of one message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ProtobufError> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let field = match key & 7 {
            0 => {
                varint(buf, &mut pos)?;
                Field::Varint
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?)
                    .map_err(|_| ProtobufError::Malformed("length"))?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or(ProtobufError::Malformed("truncated field"))?;
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            1 => {
                pos += 8;
                Field::Varint
            }
            5 => {
                pos += 4;
                Field::Varint
            }
            _ => return Err(ProtobufError::Malformed("wire type")),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// A `map<string,string>` entry (key = 1, value = 2).
fn map_entry(bytes: &[u8]) -> Result<(String, Value), ProtobufError> {
    let mut key = String::new();
    let mut value = json!("");
    for (n, f) in fields(bytes)? {
        if let Field::Bytes(b) = f {
            match n {
                1 => key = String::from_utf8_lossy(b).into_owned(),
                2 => value = text(b),
                _ => {}
            }
        }
    }
    Ok((key, value))
}

fn object_meta(bytes: &[u8]) -> Result<Value, ProtobufError> {
    let mut meta = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    for (n, f) in fields(bytes)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => {
                meta.insert("name".into(), text(b));
            }
            2 => {
                meta.insert("generateName".into(), text(b));
            }
            3 => {
                meta.insert("namespace".into(), text(b));
            }
            11 => {
                let (k, v) = map_entry(b)?;
                labels.insert(k, v);
            }
            12 => {
                let (k, v) = map_entry(b)?;
                annotations.insert(k, v);
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(meta))
}

/// The JSON form of a protobuf-encoded object (see the module comment for what survives).
///
/// # Errors
/// See [`ProtobufError`].
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(b"k8s\0")
        .ok_or(ProtobufError::Malformed("no k8s magic"))?;
    let (mut api_version, mut kind, mut raw) = (json!(""), String::new(), &[][..]);
    for (n, f) in fields(envelope)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => {
                for (m, g) in fields(b)? {
                    if let Field::Bytes(v) = g {
                        match m {
                            1 => api_version = text(v),
                            2 => kind = String::from_utf8_lossy(v).into_owned(),
                            _ => {}
                        }
                    }
                }
            }
            2 => raw = b,
            _ => {}
        }
    }
    if kind != "Namespace" {
        return Err(ProtobufError::Unsupported(kind));
    }
    let mut metadata = json!({});
    for (n, f) in fields(raw)? {
        if let (1, Field::Bytes(b)) = (n, f) {
            metadata = object_meta(b)?;
        }
    }
    Ok(json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": {}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(field: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2, u8::try_from(bytes.len()).expect("short")];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_namespace_as_kubectl_create_namespace_sends_it() {
        let label = [ld(1, b"team"), ld(2, b"ops")].concat();
        let meta = [ld(1, b"system-upgrade"), ld(11, &label)].concat();
        let raw = [ld(1, &meta), ld(2, b"")].concat();
        let type_meta = [ld(1, b"v1"), ld(2, b"Namespace")].concat();
        let body = [b"k8s\0".to_vec(), ld(1, &type_meta), ld(2, &raw)].concat();
        let ns = decode(&body).expect("decodes");
        assert_eq!(ns["kind"], "Namespace");
        assert_eq!(ns["metadata"]["name"], "system-upgrade");
        assert_eq!(ns["metadata"]["labels"]["team"], "ops");
        let pod = [
            b"k8s\0".to_vec(),
            ld(1, &[ld(1, b"v1"), ld(2, b"Pod")].concat()),
        ]
        .concat();
        assert_eq!(decode(&pod), Err(ProtobufError::Unsupported("Pod".into())));
        assert!(decode(b"{}").is_err());
        assert!(decode(&[b"k8s\0".to_vec(), vec![0x0a, 0x7f]].concat()).is_err());
    }
}
