cd /work/main
export PYTHONPATH=/work/exp/src
mk() { rm -rf $2; mkdir $2; cp -al $1/results $2/; [ -d $1/resources ] && cp -al $1/resources $2/; cp -a $1/.snakemake $2/; }
SM=".venv/bin/snakemake -s /work/exp/Snakefile --configfile /work/exp/config.yaml"
# run NAME SRC DST "old config files" "new config files" "--config ..." TARGETS
run() { name=$1; src=$2; dst=$3; old=$4; new=$5; cfg=$6; targets=$7; mk $src $dst; $SM $old $cfg --directory $dst --cores 2 --touch $targets > /tmp/pfc/${name}_touch.log 2>&1; /usr/bin/time -v $SM $new $cfg --directory $dst --cores 2 $targets > /tmp/pfc/${name}.log 2>&1; echo "$name rc=$?" >> /tmp/pfc/done; }
O="/work/exp/workflow/presets/omniglot.yaml"; T="results/metrics.json results/submission.csv"
run omni_s1_p64 /tmp/omni_s1_f10 /tmp/omni_s1_p64 "$O" "$O /tmp/pfc/omni64.yaml" "--config seed=1" "$T"
run ddef_p64 /tmp/ddef_f10 /tmp/ddef_p64 "/tmp/crop0_override.yaml" "/tmp/crop0_override.yaml /tmp/pfc/demo64.yaml" "" "results/metrics.json"
run dnone_p64 /tmp/dnone_f10 /tmp/dnone_p64 "/tmp/dnone_override.yaml" "/tmp/dnone_override.yaml /tmp/pfc/demo64.yaml" "" "results/metrics.json"
echo "rc=all" >> /tmp/pfc/done
