//! The request/answer layer over one rtnetlink socket: sequence numbers, ACKs, dumps and the
//! translation of kernel errors (errno + extended ack) into [`NetlinkError`].

use std::{fmt::Debug, io::Cursor};

use neli::{
    FromBytesWithInput, Size, ToBytes,
    consts::{
        nl::{NlmF, Nlmsg, NlmsgerrAttr},
        rtnl::Rtm,
        socket::NlFamily,
    },
    err::SocketError,
    nl::{NlPayload, NlmsghdrBuilder},
    socket::synchronous::NlSocketHandle,
    types::Buffer,
    utils::Groups,
};

use crate::error::{NetlinkError, Result};

/// How many times a dump is read when the kernel says it was interrupted.
const DUMP_ATTEMPTS: usize = 3;

/// One rtnetlink request socket. It belongs to the network namespace of the thread that
/// created it, for its whole life.
pub(crate) struct RtSocket {
    socket: NlSocketHandle,
    seq: u32,
}

fn socket_error(operation: &str, err: SocketError) -> NetlinkError {
    match err {
        SocketError::Io(io) => NetlinkError::Socket {
            operation: operation.to_owned(),
            source: std::io::Error::new(io.kind(), io.to_string()),
        },
        other => NetlinkError::Protocol {
            operation: operation.to_owned(),
            reason: other.to_string(),
        },
    }
}

fn ext_ack_message(attrs: &neli::types::GenlBuffer<NlmsgerrAttr, Buffer>) -> Option<String> {
    attrs
        .iter()
        .find(|attr| *attr.nla_type().nla_type() == NlmsgerrAttr::Msg)
        .map(|attr| {
            let bytes = attr.nla_payload().as_ref();
            let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        })
        .filter(|m| !m.is_empty())
}

impl RtSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open() -> Result<Self> {
        let socket = NlSocketHandle::connect(NlFamily::Route, None, Groups::empty())
            .map_err(|e| socket_error("open rtnetlink socket", e))?;
        socket
            .enable_ext_ack(true)
            .map_err(|e| socket_error("enable extended ack", e))?;
        Ok(Self { socket, seq: 0 })
    }

    fn send<P>(&mut self, operation: &str, kind: Rtm, flags: NlmF, payload: P) -> Result<u32>
    where
        P: Size + ToBytes + Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let message = NlmsghdrBuilder::default()
            .nl_type(kind)
            .nl_flags(flags | NlmF::REQUEST)
            .nl_seq(self.seq)
            .nl_payload(NlPayload::Payload(payload))
            .build()
            .map_err(|e| NetlinkError::Protocol {
                operation: operation.to_owned(),
                reason: e.to_string(),
            })?;
        self.socket
            .send(&message)
            .map_err(|e| socket_error(operation, e))?;
        Ok(self.seq)
    }

    /// Sends a request and collects every answer until the ACK (or the end of a dump).
    /// `R` is the payload type of the answers (`Ifinfomsg`, `Ifaddrmsg`, `Rtmsg`).
    /// A dump the kernel marks as interrupted (`NLM_F_DUMP_INTR`: the table changed while it
    /// was being read) is redone, up to [`DUMP_ATTEMPTS`] times.
    pub(crate) fn exchange<P, R>(
        &mut self,
        operation: &dyn Fn() -> String,
        kind: Rtm,
        flags: NlmF,
        payload: P,
    ) -> Result<Vec<R>>
    where
        P: Size + ToBytes + Debug + Clone,
        R: FromBytesWithInput<Input = usize>,
    {
        for _ in 1..DUMP_ATTEMPTS {
            let (answers, interrupted) =
                self.exchange_once(operation, kind, flags, payload.clone())?;
            if !interrupted {
                return Ok(answers);
            }
        }
        // Still changing: the last snapshot is as good as any; callers re-read before acting.
        self.exchange_once(operation, kind, flags, payload)
            .map(|(answers, _)| answers)
    }

    fn exchange_once<P, R>(
        &mut self,
        operation: &dyn Fn() -> String,
        kind: Rtm,
        flags: NlmF,
        payload: P,
    ) -> Result<(Vec<R>, bool)>
    where
        P: Size + ToBytes + Debug,
        R: FromBytesWithInput<Input = usize>,
    {
        let seq = self.send(&operation(), kind, flags | NlmF::ACK, payload)?;
        let mut answers = Vec::new();
        let mut interrupted = false;
        loop {
            let (messages, _) = self
                .socket
                .recv::<u16, Buffer>()
                .map_err(|e| socket_error(&operation(), e))?;
            for message in messages {
                let message = message.map_err(|e| socket_error(&operation(), e))?;
                if *message.nl_seq() != seq {
                    // A late answer to an earlier request that failed half-way: not ours.
                    continue;
                }
                interrupted |= message.nl_flags().contains(NlmF::DUMP_INTR);
                let kind = *message.nl_type();
                match message.nl_payload() {
                    NlPayload::Err(err) => {
                        return Err(NetlinkError::from_errno(
                            operation(),
                            -*err.error(),
                            ext_ack_message(err.ext_ack()),
                        ));
                    }
                    NlPayload::Ack(_) => return Ok((answers, interrupted)),
                    NlPayload::DumpExtAck(done) => {
                        if *done.error() != 0 {
                            return Err(NetlinkError::from_errno(
                                operation(),
                                -*done.error(),
                                ext_ack_message(done.ext_ack()),
                            ));
                        }
                        return Ok((answers, interrupted));
                    }
                    _ if kind == u16::from(Nlmsg::Done) => return Ok((answers, interrupted)),
                    NlPayload::Payload(buffer) => {
                        let bytes = buffer.as_ref();
                        let answer = R::from_bytes_with_input(&mut Cursor::new(bytes), bytes.len())
                            .map_err(|e| NetlinkError::Protocol {
                                operation: operation(),
                                reason: e.to_string(),
                            })?;
                        answers.push(answer);
                    }
                    NlPayload::Empty => {}
                }
            }
        }
    }

    /// Sends a request whose only answer is an ACK.
    pub(crate) fn execute<P>(
        &mut self,
        operation: &dyn Fn() -> String,
        kind: Rtm,
        flags: NlmF,
        payload: P,
    ) -> Result<()>
    where
        P: Size + ToBytes + Debug,
    {
        self.exchange_once::<P, Buffer>(operation, kind, flags, payload)
            .map(drop)
    }
}
