"""DataCamp, Intermediate Deep Learning with PyTorch."""

import torch
from torch import nn
from torch.nn import init


class WaterMLP(nn.Module):
    """Water potability: 9 features -> probability of 'potable' (ch. 1)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(9, 16)
        self.bn1 = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 8)
        self.bn2 = nn.BatchNorm1d(8)
        self.fc3 = nn.Linear(8, 1)
        init.kaiming_uniform_(self.fc1.weight)
        init.kaiming_uniform_(self.fc2.weight)
        init.kaiming_uniform_(self.fc3.weight, nonlinearity="sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.elu(self.bn1(self.fc1(x)))
        x = nn.functional.elu(self.bn2(self.fc2(x)))
        return torch.sigmoid(self.fc3(x))


class CloudsCNN(nn.Module):
    """Cloud type from a 64x64 RGB image (ch. 2)."""

    def __init__(self, num_classes: int = 7):
        super().__init__()
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3, padding=1), nn.ELU(), nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ELU(), nn.MaxPool2d(kernel_size=2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(64 * 16 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature_extractor(x))


class ElectricityRNN(nn.Module):
    """Next 15-minute consumption from a window of readings (ch. 3); `cell` is rnn, lstm or gru.

    The course's layers, unchanged, see the window relative to its last reading and in units of its own
    step-to-step variability, and predict the change from the last reading in those units:
        s = sqrt(mean(step^2) + eps^2),  y = last + alpha * s * fc(rnn((x - last) / s)),
    where the steps are the window's step-to-step changes (the first counted as 0, so one reading works).
    No parameters are added: `eps` and `alpha` are buffers. The error relative to the persistence forecast
    ("next = last") does not depend on the series' level or scale, and `alpha` (1 while training, then the
    shrink towards persistence chosen out of time) bounds what a changed pattern on new data can cost."""

    def __init__(self, cell: str = "rnn", hidden_size: int = 32, num_layers: int = 2):
        super().__init__()
        layer = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = layer(input_size=1, hidden_size=hidden_size, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, 1)
        self.register_buffer("eps", torch.tensor(0.02))
        self.register_buffer("alpha", torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x[:, -1, :]
        # previous reading of each step (the first is its own); no (sequence - 1)-long slice, which
        # torch.export would specialise on
        steps = x - torch.cat([x[:, :1, :], x], dim=1)[:, : x.size(1), :]
        scale = torch.sqrt((steps * steps).mean(dim=1) + self.eps * self.eps)   # (batch, 1)
        z = (x - last.unsqueeze(1)) / scale.unsqueeze(1)
        # The initial state is derived from x, so the batch size stays symbolic when exported.
        h0 = z.new_zeros(self.rnn.num_layers, z.size(0), self.rnn.hidden_size)
        if isinstance(self.rnn, nn.LSTM):
            out, _ = self.rnn(z, (h0, torch.zeros_like(h0)))
        else:
            out, _ = self.rnn(z, h0)
        return last + self.alpha * scale * self.fc(out[:, -1, :])


def electricity_rnn() -> ElectricityRNN:
    return ElectricityRNN("rnn")


def electricity_lstm() -> ElectricityRNN:
    return ElectricityRNN("lstm")


def electricity_gru() -> ElectricityRNN:
    return ElectricityRNN("gru")


def _omniglot_image_layer() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.MaxPool2d(kernel_size=2), nn.ELU(),
        nn.Flatten(), nn.Linear(16 * 32 * 32, 128),
    )


class OmniglotTwoInput(nn.Module):
    """Character (964 classes) from a glyph image plus its alphabet as a one-hot vector (ch. 4)."""

    def __init__(self, num_alphabets: int = 30, num_characters: int = 964):
        super().__init__()
        self.image_layer = _omniglot_image_layer()
        self.alphabet_layer = nn.Sequential(nn.Linear(num_alphabets, 8), nn.ELU())
        self.classifier = nn.Linear(128 + 8, num_characters)

    def forward(self, image: torch.Tensor, alphabet: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.image_layer(image), self.alphabet_layer(alphabet)), dim=1)
        return self.classifier(x)


class OmniglotTwoOutput(nn.Module):
    """Alphabet (30) and character (964) from one glyph image (ch. 4)."""

    def __init__(self, num_alphabets: int = 30, num_characters: int = 964):
        super().__init__()
        self.image_layer = _omniglot_image_layer()
        self.classifier_alpha = nn.Linear(128, num_alphabets)
        self.classifier_char = nn.Linear(128, num_characters)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.image_layer(image)
        return self.classifier_alpha(x), self.classifier_char(x)
