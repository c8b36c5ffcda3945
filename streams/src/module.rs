//! Module and driver definitions: the MT flags and their validation, `module_info`, and the
//! [`Module`] trait whose methods are the qinit entry points (open, close, put, srv).

use crate::error::{Errno, Error};
use crate::msg::Mblk;
use crate::perimeter::{Outer, Syncq};
use crate::queue::{INFPSZ, Q};
use crate::sync::Arc;
use alloc::boxed::Box;

/// MT-safe (`D_MTSAFE`); mandatory.
pub const D_MP: u32 = 0x0020;
/// Same as [`D_MP`].
pub const D_MTSAFE: u32 = D_MP;
/// Inner perimeter per queue.
pub const D_MTPERQ: u32 = 0x2000;
/// One inner perimeter around the queue pair.
pub const D_MTQPAIR: u32 = 0x4000;
/// One inner perimeter around every queue of every instance.
pub const D_MTPERMOD: u32 = 0x6000;
/// An outer perimeter around all instances.
pub const D_MTOUTPERIM: u32 = 0x8000;
/// put enters the inner perimeter shared.
pub const D_MTPUTSHARED: u32 = 0x1000;
/// open/close enter the outer perimeter exclusively.
pub const D_MTOCEXCL: u32 = 0x0800;
/// Private: open/close enter the inner perimeter shared (needs D_MTPUTSHARED).
pub const D_MTOCSHARED: u32 = 0x0080;
/// Private: qtimeout/qbufcall callbacks enter the inner perimeter shared (needs D_MTPUTSHARED).
pub const D_MTCBSHARED: u32 = 0x10000;
/// Private: srv enters the inner perimeter shared (needs D_MTPUTSHARED and D_MTPERMOD).
pub const D_MTSVCSHARED: u32 = 0x20000;

const INNER_MASK: u32 = 0x6000;

/// How an instance is being opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenHow {
    /// The driver at the bottom of a new stream.
    Driver,
    /// A module pushed onto a stream (`MODOPEN`).
    Module,
}

/// Limits copied into each queue of a pair when it is created (`module_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Module id number.
    pub idnum: u16,
    /// Smallest packet size accepted.
    pub minpsz: isize,
    /// Largest packet size accepted ([`INFPSZ`] for any).
    pub maxpsz: isize,
    /// High-water mark in bytes (and blocks).
    pub hiwat: usize,
    /// Low-water mark in bytes (and blocks).
    pub lowat: usize,
}

impl Default for ModuleInfo {
    fn default() -> Self {
        ModuleInfo {
            idnum: 0,
            minpsz: 0,
            maxpsz: INFPSZ,
            hiwat: 5120,
            lowat: 1024,
        }
    }
}

/// The entry points of a module or driver instance. One value exists per open instance;
/// it is shared by the threads the perimeters let in, so its state uses interior
/// mutability (the perimeters make those locks uncontended).
pub trait Module: Send + Sync + 'static {
    /// Called with the read queue when the instance is opened. Must call
    /// [`Q::qprocson`] before returning success.
    fn open(&self, q: Q<'_>, how: OpenHow) -> Result<(), Errno> {
        let _ = how;
        q.qprocson().map_err(|_| Errno::EINVAL)
    }
    /// Called with the read queue when the instance is closed. Must call [`Q::qprocsoff`]
    /// (after cancelling every qtimeout/qbufcall).
    fn close(&self, q: Q<'_>) {
        let _ = q.qprocsoff();
    }
    /// The put procedure of either queue (`q.is_read()` tells which).
    fn put(&self, q: Q<'_>, mp: Mblk);
    /// The service procedure of a queue that was declared with one.
    fn srv(&self, q: Q<'_>) {
        let _ = q;
    }
}

/// The inner perimeter a definition asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inner {
    None,
    PerQ,
    QPair,
    PerMod,
}

type Factory = dyn Fn(Dev) -> Box<dyn Module> + Send + Sync;

/// The device number an open names ([`crate::Stream::open_dev`]), as illumos's `devp` names a
/// minor device: the driver's factory, and that of every module pushed later, learn which
/// device the instance is for.
pub type Dev = u32;

/// A registered module or driver: its name, MT flags, queue limits, which queues have a
/// service procedure, and how to make an instance. Built by [`ModuleDef::builder`]; an
/// invalid flag combination is refused there, so it can never be pushed or opened.
pub struct ModuleDef {
    pub(crate) name: &'static str,
    pub(crate) flags: u32,
    pub(crate) inner: Inner,
    pub(crate) rinfo: ModuleInfo,
    pub(crate) winfo: ModuleInfo,
    pub(crate) rsrv: bool,
    pub(crate) wsrv: bool,
    pub(crate) factory: Box<Factory>,
    /// The D_MTPERMOD syncq shared by all instances.
    pub(crate) permod: Option<Arc<Syncq>>,
    /// The D_MTOUTPERIM outer perimeter shared by all instances.
    pub(crate) outer: Option<Arc<Outer>>,
}

impl core::fmt::Debug for ModuleDef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ModuleDef({}, {:#x})", self.name, self.flags)
    }
}

/// Builds a [`ModuleDef`].
pub struct ModuleDefBuilder {
    name: &'static str,
    flags: u32,
    rinfo: ModuleInfo,
    winfo: ModuleInfo,
    rsrv: bool,
    wsrv: bool,
}

impl ModuleDef {
    /// Starts a definition named `name` with flags `D_MP | D_MTQPAIR`.
    pub fn builder(name: &'static str) -> ModuleDefBuilder {
        ModuleDefBuilder {
            name,
            flags: D_MP | D_MTQPAIR,
            rinfo: ModuleInfo::default(),
            winfo: ModuleInfo::default(),
            rsrv: false,
            wsrv: false,
        }
    }

    /// The name the definition was registered under.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The MT flags.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    pub(crate) fn put_shared(&self) -> bool {
        self.inner == Inner::None || self.flags & D_MTPUTSHARED != 0
    }
    pub(crate) fn srv_shared(&self) -> bool {
        self.inner == Inner::None || self.flags & D_MTSVCSHARED != 0
    }
    pub(crate) fn oc_shared(&self) -> bool {
        self.inner == Inner::None || self.flags & D_MTOCSHARED != 0
    }
    pub(crate) fn cb_shared(&self) -> bool {
        self.inner == Inner::None || self.flags & D_MTCBSHARED != 0
    }
    pub(crate) fn oc_excl_outer(&self) -> bool {
        self.outer.is_some() && self.flags & D_MTOCEXCL != 0
    }
}

/// Checks an MT flag combination as `devflg_to_qflag` does and says which inner perimeter it asks for.
pub(crate) fn validate_flags(flags: u32) -> Result<Inner, Error> {
    let bad = Err(Error::BadMtFlags(flags));
    if flags & D_MP == 0 {
        return bad;
    }
    let inner = match flags & INNER_MASK {
        0 => Inner::None,
        D_MTPERQ => Inner::PerQ,
        D_MTQPAIR => Inner::QPair,
        _ => Inner::PerMod,
    };
    let modifiers = D_MTPUTSHARED | D_MTOCSHARED | D_MTCBSHARED | D_MTSVCSHARED;
    if inner == Inner::None && flags & modifiers != 0 {
        return bad;
    }
    if flags & D_MTOUTPERIM != 0 && inner == Inner::PerMod {
        return bad;
    }
    if flags & D_MTOCEXCL != 0 && flags & D_MTOUTPERIM == 0 {
        return bad;
    }
    if flags & (D_MTOCSHARED | D_MTCBSHARED | D_MTSVCSHARED) != 0 && flags & D_MTPUTSHARED == 0 {
        return bad;
    }
    if flags & D_MTSVCSHARED != 0 && inner != Inner::PerMod {
        return bad;
    }
    Ok(inner)
}

impl ModuleDefBuilder {
    /// Sets the MT flags (`D_MP | ...`).
    pub fn flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }
    /// Sets the same `module_info` for both queues.
    pub fn info(mut self, info: ModuleInfo) -> Self {
        self.rinfo = info;
        self.winfo = info;
        self
    }
    /// Sets the read queue's `module_info`.
    pub fn rinfo(mut self, info: ModuleInfo) -> Self {
        self.rinfo = info;
        self
    }
    /// Sets the write queue's `module_info`.
    pub fn winfo(mut self, info: ModuleInfo) -> Self {
        self.winfo = info;
        self
    }
    /// Declares which queues have a service procedure ([`Module::srv`] is called for them).
    pub fn srv(mut self, read: bool, write: bool) -> Self {
        self.rsrv = read;
        self.wsrv = write;
        self
    }
    /// Registers the definition with `factory` making one [`Module`] per open instance.
    /// Fails with [`Error::BadMtFlags`] (EINVAL) for an invalid flag combination.
    pub fn build<M: Module>(
        self,
        factory: impl Fn() -> M + Send + Sync + 'static,
    ) -> Result<Arc<ModuleDef>, Error> {
        self.build_dev(move |_| factory())
    }

    /// [`ModuleDefBuilder::build`] for a module whose instance depends on the device its
    /// stream was opened on: `factory` gets the [`Dev`] the open named.
    pub fn build_dev<M: Module>(
        self,
        factory: impl Fn(Dev) -> M + Send + Sync + 'static,
    ) -> Result<Arc<ModuleDef>, Error> {
        let inner = validate_flags(self.flags)?;
        Ok(Arc::new(ModuleDef {
            name: self.name,
            flags: self.flags,
            inner,
            rinfo: self.rinfo,
            winfo: self.winfo,
            rsrv: self.rsrv,
            wsrv: self.wsrv,
            factory: Box::new(move |dev| Box::new(factory(dev))),
            permod: (inner == Inner::PerMod).then(|| Arc::new(Syncq::new())),
            outer: (self.flags & D_MTOUTPERIM != 0).then(|| Arc::new(Outer::new())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permod_is_decoded_by_value_not_by_bits() {
        assert_eq!(validate_flags(D_MP | D_MTPERMOD), Ok(Inner::PerMod));
        assert_eq!(validate_flags(D_MP | D_MTPERQ), Ok(Inner::PerQ));
        assert_eq!(validate_flags(D_MP | D_MTQPAIR), Ok(Inner::QPair));
        assert_eq!(validate_flags(D_MP), Ok(Inner::None));
    }

    #[test]
    fn valid_combinations_are_accepted() {
        for f in [
            D_MP | D_MTOUTPERIM,
            D_MP | D_MTPERQ | D_MTOUTPERIM | D_MTOCEXCL,
            D_MP | D_MTQPAIR | D_MTPUTSHARED | D_MTOCSHARED | D_MTCBSHARED,
            D_MP | D_MTPERMOD | D_MTPUTSHARED | D_MTSVCSHARED,
        ] {
            assert!(validate_flags(f).is_ok(), "{f:#x}");
        }
    }
}
