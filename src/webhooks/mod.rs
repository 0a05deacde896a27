//! Receiving what the trackings send: SOGET's webhook payload read into
//! events ([`payload`]), the receiver that takes them at a secret path
//! ([`receiver`], [`token`]) and the store that keeps each once
//! ([`store`]). The export that ties them to documents comes next.

pub mod payload;
pub mod receiver;
pub mod store;
pub mod token;
