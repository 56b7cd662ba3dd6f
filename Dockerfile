# A challenge container: the suite, one exported model folder, and a challenge's entry point.
#
#   lightning-cv export runs/<experiment> --to model              # the model folder to ship
#   docker build -t strokeseg-isles22 --build-arg MODEL=model .
#   docker run --rm --network none -v $PWD/in:/input:ro -v $PWD/out:/output strokeseg-isles22
#
# CPU by default (the pinned CPU torch of constraints-cpu.txt). For a CUDA build, start from a
# CUDA runtime image with Python 3.11 and let pip choose the torch build:
#   docker build --build-arg BASE=<cuda image with python3.11> --build-arg CONSTRAINTS= ...
# CHALLENGE picks the entry point: isles2022 (Grand-Challenge's /input/images/* → /output) or
# atlas2 (ATLAS R2.0 T1s under /input → the BIDS derivative under /output).
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG CONSTRAINTS=constraints-cpu.txt
ARG MODEL=model
ARG CHALLENGE=isles2022

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 MPLBACKEND=Agg CHALLENGE=${CHALLENGE}
WORKDIR /opt/strokeseg
COPY pyproject.toml README.md constraints-cpu.txt ./
COPY core ./core
COPY networks ./networks
COPY losses ./losses
COPY datamodules ./datamodules
COPY evaluation ./evaluation
COPY lightning_modules ./lightning_modules
COPY callbacks ./callbacks
COPY cli ./cli
RUN pip install $([ -n "${CONSTRAINTS}" ] && echo "-c ${CONSTRAINTS}") .
COPY ${MODEL} /opt/model

# Grand-Challenge runs the container as an unprivileged user without network access.
RUN useradd --create-home algorithm && mkdir -p /output && chown algorithm /output
USER algorithm
ENTRYPOINT ["sh", "-c", "exec lightning-cv challenge \"$CHALLENGE\" --model /opt/model --input /input --output /output"]
