//! Receiving what the trackings send (issue 13, in progress): for now the
//! reading of SOGET's webhook payload into events with their
//! de-duplication key ([`payload`]); the receiver, its store and the export
//! come next.

pub mod payload;
