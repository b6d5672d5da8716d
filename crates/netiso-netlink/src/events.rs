//! Link change notifications (`RTNLGRP_LINK`) of one namespace as an async stream, optionally
//! with address (`RTNLGRP_IPV{4,6}_IFADDR`) and route (`RTNLGRP_IPV{4,6}_ROUTE`) changes.

use std::{
    io::Cursor,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{Stream, stream::BoxStream};
use neli::{
    FromBytesWithInput,
    consts::{rtnl::Rtm, socket::NlFamily},
    nl::NlPayload,
    rtnl::{Ifaddrmsg, Ifinfomsg, Rtmsg},
    socket::asynchronous::NlSocketHandle,
    types::Buffer,
    utils::Groups,
};

use crate::{
    LinkEvent, Namespace,
    error::NetlinkError,
    error::Result,
    handle::{parse_address, parse_link, parse_route},
};

/// Receive buffer asked for the event socket: bursts (a NIC returned with many changes) must
/// not overrun it; overruns are still reported as [`LinkEvent::Overrun`].
const EVENT_RECV_BUFFER: usize = 1 << 20;

/// An endless stream of link changes in one namespace. Dropping it closes the socket.
pub struct LinkEvents {
    inner: BoxStream<'static, Result<LinkEvent>>,
}

impl std::fmt::Debug for LinkEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkEvents")
    }
}

fn decode(kind: u16, payload: &Buffer) -> Option<LinkEvent> {
    let bytes = payload.as_ref();
    let mut cursor = Cursor::new(bytes);
    if kind == u16::from(Rtm::Newlink) || kind == u16::from(Rtm::Dellink) {
        let link = parse_link(&Ifinfomsg::from_bytes_with_input(&mut cursor, bytes.len()).ok()?);
        Some(if kind == u16::from(Rtm::Newlink) {
            LinkEvent::Changed(link)
        } else {
            LinkEvent::Removed(link)
        })
    } else if kind == u16::from(Rtm::Newaddr) || kind == u16::from(Rtm::Deladdr) {
        let address =
            parse_address(&Ifaddrmsg::from_bytes_with_input(&mut cursor, bytes.len()).ok()?)?;
        Some(if kind == u16::from(Rtm::Newaddr) {
            LinkEvent::AddressAdded(address)
        } else {
            LinkEvent::AddressRemoved(address)
        })
    } else if kind == u16::from(Rtm::Newroute) || kind == u16::from(Rtm::Delroute) {
        let route = parse_route(&Rtmsg::from_bytes_with_input(&mut cursor, bytes.len()).ok()?)?;
        Some(if kind == u16::from(Rtm::Newroute) {
            LinkEvent::RouteAdded(route)
        } else {
            LinkEvent::RouteRemoved(route)
        })
    } else {
        None
    }
}

async fn next_batch(socket: &NlSocketHandle) -> Result<Vec<LinkEvent>> {
    match socket.recv::<u16, Buffer>().await {
        Ok((messages, _)) => {
            let mut events = Vec::new();
            for message in messages {
                let message = message.map_err(|e| NetlinkError::Protocol {
                    operation: "read link event".into(),
                    reason: e.to_string(),
                })?;
                if let NlPayload::Payload(payload) = message.nl_payload()
                    && let Some(event) = decode(*message.nl_type(), payload)
                {
                    events.push(event);
                }
            }
            Ok(events)
        }
        Err(neli::err::SocketError::Io(io)) if io.raw_os_error() == Some(libc::ENOBUFS) => {
            Ok(vec![LinkEvent::Overrun])
        }
        Err(e) => Err(NetlinkError::Protocol {
            operation: "read link event".into(),
            reason: e.to_string(),
        }),
    }
}

impl LinkEvents {
    /// Subscribes to link notifications of `namespace`. Needs a tokio runtime (the socket is
    /// registered with its reactor), but never moves a runtime thread into the namespace.
    pub fn subscribe(namespace: &Namespace) -> Result<Self> {
        Self::subscribe_groups(namespace, &[libc::RTNLGRP_LINK])
    }

    /// Like [`LinkEvents::subscribe`], with address additions and removals (IPv4 and IPv6)
    /// too: an address put on a link that is down raises no link event.
    pub fn subscribe_with_addresses(namespace: &Namespace) -> Result<Self> {
        Self::subscribe_groups(
            namespace,
            &[
                libc::RTNLGRP_LINK,
                libc::RTNLGRP_IPV4_IFADDR,
                libc::RTNLGRP_IPV6_IFADDR,
            ],
        )
    }

    /// Like [`LinkEvents::subscribe_with_addresses`], with route additions and removals (IPv4
    /// and IPv6) too: a route added through a link that stays up raises neither a link nor an
    /// address event.
    pub fn subscribe_with_addresses_and_routes(namespace: &Namespace) -> Result<Self> {
        Self::subscribe_groups(
            namespace,
            &[
                libc::RTNLGRP_LINK,
                libc::RTNLGRP_IPV4_IFADDR,
                libc::RTNLGRP_IPV6_IFADDR,
                libc::RTNLGRP_IPV4_ROUTE,
                libc::RTNLGRP_IPV6_ROUTE,
            ],
        )
    }

    fn subscribe_groups(namespace: &Namespace, groups: &[u32]) -> Result<Self> {
        let groups = groups.to_vec();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            NetlinkError::InvalidArgument("link events need a tokio runtime".into())
        })?;
        let socket = namespace.run(move || {
            let _entered = runtime.enter();
            let socket =
                NlSocketHandle::connect(NlFamily::Route, None, Groups::new_groups(&groups))?;
            socket.set_recv_buffer_size(EVENT_RECV_BUFFER)?;
            Ok::<_, neli::err::SocketError>(socket)
        })?;
        let socket = socket.map_err(|e| NetlinkError::Protocol {
            operation: "subscribe to link events".into(),
            reason: e.to_string(),
        })?;
        let stream = futures::stream::unfold(
            (socket, std::collections::VecDeque::new()),
            |(socket, mut pending)| async move {
                loop {
                    if let Some(event) = pending.pop_front() {
                        return Some((Ok(event), (socket, pending)));
                    }
                    match next_batch(&socket).await {
                        Ok(batch) => pending.extend(batch),
                        Err(e) => return Some((Err(e), (socket, pending))),
                    }
                }
            },
        );
        Ok(Self {
            inner: Box::pin(stream),
        })
    }
}

impl Stream for LinkEvents {
    type Item = Result<LinkEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
