#!/usr/bin/perl
# Writes the small MaxMind DB files the GeoIP tests read (test/fixtures/geo/*.mmdb).
#
#   apt-get install -y libmaxmind-db-writer-perl     # Debian/Ubuntu: MaxMind::DB::Writer
#   perl scripts/make-test-mmdb.pl [OUTDIR]          # default OUTDIR: test/fixtures/geo
#
# The generated files are committed, so the tests never need perl; run this only to change the data.
# Every answer here is SYNTHETIC. The networks are ordinary public ranges (GeoIP lookups skip special-purpose
# ranges, so documentation prefixes cannot be used), several borrowed from MaxMind's own test databases; the
# places, coordinates and AS numbers do not describe who really holds those addresses. AS numbers come from the
# documentation ranges (RFC 5398: 64496-64511, 65536-65551) so nobody mistakes them for real ones.
# Build epochs are fixed so regenerating gives byte-identical files.
use strict;
use warnings;
use utf8;

use MaxMind::DB::Writer::Tree;

my $outdir = shift // 'test/fixtures/geo';

my %types = (
    accuracy_radius                => 'uint16',
    autonomous_system_number       => 'uint32',
    autonomous_system_organization => 'utf8_string',
    city                           => 'map',
    code                           => 'utf8_string',
    continent                      => 'map',
    country                        => 'map',
    en                             => 'utf8_string',
    geoname_id                     => 'uint32',
    iso_code                       => 'utf8_string',
    latitude                       => 'double',
    location                       => 'map',
    longitude                      => 'double',
    names                          => 'map',
    time_zone                      => 'utf8_string',
);

sub city {
    my (%a) = @_;
    my %r = (
        continent => { code => $a{continent}, names => { en => $a{continent_name} } },
        country   => { iso_code => $a{iso}, names => { en => $a{country} } },
    );
    $r{city} = { names => { en => $a{city} } } if defined $a{city};
    $r{location} = { latitude => $a{lat}, longitude => $a{lon}, accuracy_radius => 20 } if defined $a{lat};
    return \%r;
}

my %uk         = (continent => 'EU', continent_name => 'Europe', iso => 'GB', country => 'United Kingdom');
my %sweden     = (continent => 'EU', continent_name => 'Europe', iso => 'SE', country => 'Sweden');
my %usa        = (continent => 'NA', continent_name => 'North America', iso => 'US', country => 'United States');
my %japan      = (continent => 'AS', continent_name => 'Asia', iso => 'JP', country => 'Japan');

# v1 and v2 differ on 81.2.69.0/24 only, so a reload test can see which one answered.
my %city_versions = (
    'test-city-v1.mmdb' => {
        epoch => 1700000000,
        nets  => {
            '81.2.69.0/24'     => city(%uk, city => 'London', lat => 51.5142, lon => -0.0931),
            '89.160.20.0/24'   => city(%sweden, city => 'Linköping', lat => 58.4167, lon => 15.6167),
            '216.160.83.0/24'  => city(%usa, city => 'Milton', lat => 47.2513, lon => -122.3149),
            '2001:218::/32'    => city(%japan),    # country only: no city, no location
            '2a02:ec80::/29'   => city(%sweden, city => 'Stockholm', lat => 59.3294, lon => 18.0686),
        },
    },
    'test-city-v2.mmdb' => {
        epoch => 1710000000,
        nets  => {
            '81.2.69.0/24'     => city(%uk, city => 'Manchester', lat => 53.4808, lon => -2.2426),
            '89.160.20.0/24'   => city(%sweden, city => 'Linköping', lat => 58.4167, lon => 15.6167),
            '216.160.83.0/24'  => city(%usa, city => 'Milton', lat => 47.2513, lon => -122.3149),
            '2001:218::/32'    => city(%japan),
            '2a02:ec80::/29'   => city(%sweden, city => 'Stockholm', lat => 59.3294, lon => 18.0686),
        },
    },
);

sub asn {
    my ($number, $org) = @_;
    return { autonomous_system_number => $number, autonomous_system_organization => $org };
}

my %asn = (
    epoch => 1705000000,
    nets  => {
        '81.2.69.0/24'    => asn(64496, 'Synthetic Carrier GB'),
        '89.160.20.0/24'  => asn(64497, 'Synthetic Carrier SE'),
        '12.81.92.0/22'   => asn(64498, 'Synthetic Carrier Without Geo'),
        '2001:218::/32'   => asn(65536, 'Synthetic Carrier JP'),
        # 216.160.83.0/24 deliberately absent: a geo answer with no ASN answer.
    },
);

sub write_db {
    my ($file, $type, $spec) = @_;
    my $tree = MaxMind::DB::Writer::Tree->new(
        ip_version            => 6,
        record_size           => 24,
        database_type         => $type,
        languages             => ['en'],
        description           => { en => 'dockflow synthetic test data; not real locations' },
        alias_ipv6_to_ipv4    => 1,
        map_key_type_callback => sub { $types{ $_[0] } // die "no type for key $_[0]" },
    );
    $tree->_set_build_epoch($spec->{epoch});
    for my $net (sort keys %{ $spec->{nets} }) {
        $tree->insert_network($net, $spec->{nets}{$net});
    }
    open my $fh, '>:raw', "$outdir/$file" or die "$outdir/$file: $!";
    $tree->write_tree($fh);
    close $fh or die "$outdir/$file: $!";
    print "wrote $outdir/$file\n";
}

write_db($_, 'Dockflow-Test-City', $city_versions{$_}) for sort keys %city_versions;
write_db('test-asn.mmdb', 'Dockflow-Test-ASN', \%asn);
