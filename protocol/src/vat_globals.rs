//! The names of the globals a kernel vat may be granted beyond the
//! standard confined set (ocap-kernel's `VatConfig.globals`). One list for
//! both sides: the node checks a cluster config against it without an
//! engine, and the JavaScript engine installs what it names.

/// The globals a vat may ask for, as ocap-kernel names them (its
/// `SubtleCrypto` is not offered).
pub const VAT_GLOBAL_NAMES: &[&str] = &[
    "setTimeout",
    "clearTimeout",
    "setInterval",
    "clearInterval",
    "Date",
    "Math",
    "crypto",
    "fetch",
    "Request",
    "Headers",
    "Response",
    "TextEncoder",
    "TextDecoder",
    "URL",
    "URLSearchParams",
    "atob",
    "btoa",
    "AbortController",
    "AbortSignal",
];
