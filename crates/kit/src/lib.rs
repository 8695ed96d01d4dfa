//! pooldump-kit
