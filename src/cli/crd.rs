//! `ferrovol crd`: prints the CustomResourceDefinitions the chart ships.

use crate::server::BoxResult;

pub fn run() -> BoxResult<()> {
    print!("{}", crate::discovery::crd::crd_yaml());
    Ok(())
}
