"""The station table: code, name, geodetic latitude/longitude (degrees) and altitude (metres)."""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources

import pandas as pd


@dataclasses.dataclass(frozen=True)
class Station:
    code: str
    name: str
    latitude: float  #: degrees north
    longitude: float  #: degrees east
    altitude_m: float  #: metres above sea level
    network: str

    def attrs(self) -> dict:
        """Zarr group attributes describing the site, with units."""
        return {
            "station": self.code,
            "station_name": self.name,
            "station_latitude": self.latitude,
            "station_latitude_units": "degrees_north",
            "station_longitude": self.longitude,
            "station_longitude_units": "degrees_east",
            "station_altitude": self.altitude_m,
            "station_altitude_units": "m",
            "network": self.network,
        }


@functools.lru_cache(maxsize=1)
def station_table() -> pd.DataFrame:
    """The shipped station table, indexed by upper-case station code."""
    with resources.files("aurora_batch.data").joinpath("stations.csv").open() as f:
        table = pd.read_csv(f, comment="#")
    return table.set_index("code")


def get_station(code: str) -> Station:
    """Look up one station; raises ``KeyError`` naming the unknown code."""
    table = station_table()
    code = code.upper()
    if code not in table.index:
        raise KeyError(f"unknown station {code!r}; known: {', '.join(table.index)}")
    row = table.loc[code]
    return Station(
        code,
        str(row["name"]),
        float(row["latitude"]),
        float(row["longitude"]),
        float(row["altitude_m"]),
        str(row["network"]),
    )
