import type { Topology } from 'topojson-specification';
import { feature } from 'topojson-client';
import type { Feature, FeatureCollection, Geometry } from 'geojson';
import codes from 'i18n-iso-countries/codes.json' with { type: 'json' };
import atlas from 'world-atlas/countries-110m.json' with { type: 'json' };

export type CountryFeature = Feature<Geometry, { name: string }> & { id?: string };

/** Natural Earth's 1:110m country shapes (world-atlas), keyed by ISO 3166-1 numeric code. */
export const COUNTRY_SHAPES: CountryFeature[] = (
  feature(atlas as unknown as Topology, (atlas as unknown as Topology).objects.countries!) as FeatureCollection<Geometry, { name: string }>
).features as CountryFeature[];

const NUMERIC_BY_ALPHA2 = new Map<string, string>((codes as string[][]).map((c) => [c[0]!, c[2]!]));
const NAME_BY_NUMERIC = new Map(COUNTRY_SHAPES.filter((f) => f.id !== undefined).map((f) => [f.id!, f.properties.name]));

/** The numeric code world-atlas uses for an alpha-2 code (what GeoIP gives), or undefined when ISO has none. */
export const numericOf = (alpha2: string): string | undefined => NUMERIC_BY_ALPHA2.get(alpha2);

/** A readable name: Natural Earth's when the country is on the map, else the code itself. */
export function countryName(alpha2: string): string {
  const n = numericOf(alpha2);
  return (n !== undefined ? NAME_BY_NUMERIC.get(n) : undefined) ?? alpha2;
}
