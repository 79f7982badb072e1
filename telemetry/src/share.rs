//! [`GaugeShare`]: one operator's part of a process-wide gauge.

use prometheus_client::metrics::gauge::Gauge;

/// One operator's share of a gauge that sums over the operators of a
/// process (windows open, partitions ahead, …): the operator sets its own
/// value, the gauge moves by the difference, and the share is taken back
/// when the operator is dropped.
#[derive(Debug)]
pub struct GaugeShare {
    gauge: Gauge,
    reported: i64,
}

impl GaugeShare {
    /// A share of `gauge`, at 0.
    pub fn new(gauge: Gauge) -> Self {
        GaugeShare { gauge, reported: 0 }
    }

    /// Sets this operator's value.
    pub fn set(&mut self, value: i64) {
        if value != self.reported {
            self.gauge.inc_by(value - self.reported);
            self.reported = value;
        }
    }
}

impl Drop for GaugeShare {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_leave_with_their_operator() {
        let g = Gauge::default();
        let mut a = GaugeShare::new(g.clone());
        let mut b = GaugeShare::new(g.clone());
        a.set(5);
        b.set(3);
        a.set(2);
        assert_eq!(g.get(), 5);
        drop(b);
        assert_eq!(g.get(), 2);
    }
}
