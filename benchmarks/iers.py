"""What the Sun and Moon filter needs from IERS data, measured: altitudes with Skyfield's built-in timescale
against the measured UT1-UTC of skyfield-data's finals2000A.all, and what a second of UT1 error does.

The filter uses ``timescale(builtin=True)`` (leap seconds and UT1-UTC/ΔT that ship with Skyfield) and no
polar motion.  This script evaluates full topocentric Sun and Moon altitudes at two sites on random
instants of 2000-2023 with both timescales, prints the largest difference in degrees, and the change a
1 s error in UT1 makes.  Usage::

    python benchmarks/iers.py [--samples 2000]
"""

from __future__ import annotations

import argparse
import os
import warnings
from importlib.resources import files

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()
    from skyfield.api import Loader, wgs84

    folder = str(files("skyfield_data") / "data")
    load = Loader(folder, verbose=False)
    builtin = load.timescale(builtin=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measured = load.timescale(builtin=False)  # reads finals2000A.all (IERS Bulletin A, to its end)
    eph = load("de421.bsp")
    rng = np.random.default_rng(0)
    years = 2000 + rng.random(args.samples) * 23.5
    jd = 2451544.5 + (years - 2000) * 365.25
    worst = {}
    for code, lat, lon in (("NYA", 78.92, 11.93), ("GILL", 56.376, -94.64)):
        site = eph["earth"] + wgs84.latlon(lat, lon)
        for body in ("sun", "moon"):
            alts = []
            for ts in (builtin, measured):
                t = ts.tt_jd(jd)
                alts.append(site.at(t).observe(eph[body]).apparent().altaz()[0].degrees)
            t = builtin.tt_jd(jd)
            shifted = builtin.tt_jd(jd + 1.0 / 86400)  # the same UT1 one second later
            d1 = (
                site.at(shifted).observe(eph[body]).apparent().altaz()[0].degrees
                - site.at(t).observe(eph[body]).apparent().altaz()[0].degrees
            )
            worst[(code, body)] = (np.abs(alts[0] - alts[1]).max(), np.abs(d1).max())
    dut1 = np.abs(builtin.tt_jd(jd).ut1 - measured.tt_jd(jd).ut1).max() * 86400
    print(f"UT1 of the built-in timescale vs finals2000A.all over 2000-2023: largest difference {dut1:.4f} s")
    for (code, body), (diff, per_second) in worst.items():
        print(
            f"  {code} {body:4s}: altitude differs by at most {diff:.6f} deg; 1 s of UT1 error moves it "
            f"up to {per_second:.4f} deg"
        )
    print(f"(skyfield-data in {os.path.dirname(folder)})")


if __name__ == "__main__":
    main()
