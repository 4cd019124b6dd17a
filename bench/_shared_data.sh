# Sourced by the protocol scripts after they set $here (their folder): sets $dataset (the CIFAR-10
# JPEG zip) and $table (the 12-epoch NAS-Bench-201 table) from $DNAS_SHARED_DATA (default
# ../shared/data beside the checkout), or exits 2 with one sentence when either is missing.
data="${DNAS_SHARED_DATA:-$here/../../shared/data}"
dataset="$data/cifar10_jpeg/cifar10_train_jpeg.zip"
table="$data/nb201_12ep_minibench/mini-bench-arch-cell-accs.csv"
for f in "$dataset" "$table"; do
    if [[ ! -f "$f" ]]; then
        echo "$(basename "$0" .sh): $f not found; set DNAS_SHARED_DATA to the folder holding cifar10_jpeg/ and" \
             "nb201_12ep_minibench/" >&2
        exit 2
    fi
done
