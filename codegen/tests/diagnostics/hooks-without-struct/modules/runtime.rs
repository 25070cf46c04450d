// registers nothing
pub fn init() {}
