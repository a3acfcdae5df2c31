"""The committed stubs must be exactly what protoc makes from the .proto."""
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_generator():
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "proto" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_stubs_match_proto(tmp_path):
    fresh = _load_generator().generate(tmp_path)
    committed = REPO / "client" / "imagesieve" / "v1"
    names = sorted(p.name for p in fresh)
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    stale = [n for n in names if (tmp_path / "imagesieve" / "v1" / n).read_bytes() != (committed / n).read_bytes()]
    assert not stale, f"stubs drifted from proto/: {stale}; run: python proto/generate.py"


def test_proto_package_and_services():
    from imagesieve.v1 import analysis_pb2, collections_pb2, duplicates_pb2, embedding_pb2
    services = {s.full_name: [m.name for m in s.methods]
                for mod in (embedding_pb2, collections_pb2, duplicates_pb2, analysis_pb2)
                for s in mod.DESCRIPTOR.services_by_name.values()}
    assert services["imagesieve.v1.EmbeddingService"] == ["Embed", "EmbedStream", "GetModelInfo"]
    assert "CheckDuplicates" in services["imagesieve.v1.DuplicateService"]
    assert {"ScoreLabels", "SampleSizeSweep"} <= set(services["imagesieve.v1.AnalysisService"])
    assert {"CreateCollection", "ListCollections", "GetCollectionStats", "DropCollection",
            "SnapshotCollection", "AddImages"} <= set(services["imagesieve.v1.CollectionService"])
    check = duplicates_pb2.DESCRIPTOR.services_by_name["DuplicateService"].methods_by_name["CheckDuplicates"]
    assert check.client_streaming and check.server_streaming
    assert sys.modules["imagesieve.v1.embedding_pb2"].DESCRIPTOR.package == "imagesieve.v1"
