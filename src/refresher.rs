//! `SubscriberRefresher`: [`Refresh`](crate::Refresh) over SignalWire's refresh endpoint.
